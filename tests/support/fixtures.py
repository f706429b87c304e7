"""Tiny random BERT and XLM-RoBERTa checkpoints with real `tokenizers` tokenizers, built offline."""

from __future__ import annotations

import os
from pathlib import Path

from e5rt_export.probes import probe_texts
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

CORPUS = probe_texts() * 2


def _bert_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    tok.decoder = decoders.WordPiece()
    return tok


def _xlmr_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=700, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    tok.decoder = decoders.Metaspace()
    return tok


def build_checkpoint(kind: str, out: Path, with_tokenizer: bool = True, seed: int = 0) -> Path:
    """Write a tiny random checkpoint directory (config, safetensors weights, tokenizer files)."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "bert":
        tok = _bert_tokenizer()
        config = BertConfig(
            vocab_size=tok.get_vocab_size(),
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=128,
            pad_token_id=0,
            initializer_range=0.2,
        )
        model = BertModel(config, add_pooling_layer=False)
        specials = {
            "unk_token": "[UNK]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        }
    elif kind == "xlm-roberta":
        tok = _xlmr_tokenizer()
        config = XLMRobertaConfig(
            vocab_size=tok.get_vocab_size(),
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=130,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            type_vocab_size=1,
            layer_norm_eps=1e-5,
            initializer_range=0.2,
        )
        model = XLMRobertaModel(config, add_pooling_layer=False)
        specials = {
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "cls_token": "<s>",
            "sep_token": "</s>",
            "mask_token": "<unk>",
        }
    else:
        raise ValueError(kind)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    if with_tokenizer:
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, model_max_length=config.max_position_embeddings, **specials
        )
        fast.save_pretrained(out)
    return out
