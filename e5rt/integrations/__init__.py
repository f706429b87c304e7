"""In-process integrations: e5rt behind the embedding and reranking classes of LangChain, LlamaIndex, Haystack and
sentence-transformers code. Each module imports its framework when it is imported (never by `import e5rt`),
and a missing framework is one error naming the extra to install.

- e5rt.integrations.langchain.E5rtEmbeddings, E5rtReranker   (extra: langchain)
- e5rt.integrations.llama_index.E5rtEmbedding, E5rtRerank    (extra: llama-index)
- e5rt.integrations.haystack.E5rtTextEmbedder / E5rtDocumentEmbedder / E5rtRanker  (extra: haystack)
- e5rt.integrations.sentence_transformers.SentenceTransformer (no extra: numpy only)

Every class is built as Cls(model_dir, **load options): the embedders give the vectors Embedder.encode gives,
the rerankers (E5rtReranker, E5rtRerank, E5rtRanker) the order and scores Reranker.rerank gives.
"""
