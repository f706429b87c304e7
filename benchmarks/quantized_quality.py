"""Retrieval quality of quantized output vectors against float32, on a retrieval set of e5rt's own.

    .venv/bin/python benchmarks/quantized_quality.py MODEL_DIR [MODEL_DIR ...] --json PATH
    .venv/bin/python benchmarks/quantized_quality.py --render PATH

The set (generated, seeded, in English, German, Spanish and Korean): 240 fact cards about invented places
("Velmora is a harbour town ... known for its glass-blowing workshops and a red lighthouse"), each with a query
that asks for one of its facts in other words ("which town has glassmakers?"); a card is relevant to its own
query only, and every (kind of place, fact) pair is used once, so cards sharing a fact with another kind of place
are hard negatives. 1,500 texts of the benchmark corpus are added as distractors. Queries are embedded as
queries, cards and distractors as passages.

Per precision: MRR@10 and recall@10 (int8 / uint8 scored by the dot product of the stored integers, as a
vector database indexing them does; binary by Hamming distance), binary with float32 rescoring of its top 100,
and bytes per vector; the precisions come from the model's own calibration (its manifest), with sign bits
alongside. Then how many calibration texts the ranges need (calibrations from 16 to 1,024 benchmark-corpus texts,
the eval set excluded) and how stable they are across scripts (calibrated on Latin-script texts only, or on the
others only).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e5rt import Embedder  # noqa: E402
from e5rt.bench.corpus import read_rows  # noqa: E402
from e5rt.bench.report import machine  # noqa: E402
from e5rt.core.quantize import Calibration, calibrate, quantize  # noqa: E402

# (kind of place in en, de, es, ko)
KINDS = [
    ("harbour town", "Hafenstadt", "pueblo portuario", "항구 도시"),
    ("mountain village", "Bergdorf", "pueblo de montaña", "산골 마을"),
    ("museum", "Museum", "museo", "박물관"),
    ("bakery", "Bäckerei", "panadería", "빵집"),
    ("hotel", "Hotel", "hotel", "호텔"),
    ("library", "Bibliothek", "biblioteca", "도서관"),
    ("ferry company", "Fährgesellschaft", "naviera", "여객선 회사"),
    ("botanical garden", "botanischer Garten", "jardín botánico", "식물원"),
    ("school", "Schule", "escuela", "학교"),
    ("brewery", "Brauerei", "cervecería", "양조장"),
    ("hospital", "Krankenhaus", "hospital", "병원"),
    ("football club", "Fußballverein", "club de fútbol", "축구 클럽"),
]
# (how the card says it, how the query asks for it), per language
FACTS = [
    (
        ("its glass-blowing workshops", "glassmakers"),
        ("seine Glasbläsereien", "Glasmacher"),
        ("sus talleres de vidrio soplado", "vidrieros"),
        ("유리 공예 공방", "유리 장인"),
    ),
    (
        ("a red lighthouse on the pier", "a red beacon by the sea"),
        ("einen roten Leuchtturm am Pier", "ein rotes Leuchtfeuer am Meer"),
        ("un faro rojo en el muelle", "una baliza roja junto al mar"),
        ("부두의 빨간 등대", "바닷가의 붉은 등대"),
    ),
    (
        ("cheese aged in caves", "cave-ripened cheese"),
        ("in Höhlen gereiften Käse", "Höhlenkäse"),
        ("queso madurado en cuevas", "queso curado en cueva"),
        ("동굴에서 숙성한 치즈", "동굴 숙성 치즈"),
    ),
    (
        ("a festival of paper lanterns every autumn", "an autumn lantern celebration"),
        ("ein Papierlaternenfest im Herbst", "ein herbstliches Laternenfest"),
        ("un festival de farolillos de papel cada otoño", "una fiesta otoñal de faroles"),
        ("매년 가을 종이 등불 축제", "가을 등불 축제"),
    ),
    (
        ("a collection of antique clocks", "old timepieces on display"),
        ("eine Sammlung antiker Uhren", "ausgestellte alte Zeitmesser"),
        ("una colección de relojes antiguos", "relojes viejos en exposición"),
        ("골동품 시계 소장품", "전시된 오래된 시계"),
    ),
    (
        ("bread baked in a wood-fired oven", "loaves from a wood oven"),
        ("im Holzofen gebackenes Brot", "Brot aus dem Holzofen"),
        ("pan cocido en horno de leña", "hogazas de horno de leña"),
        ("장작 화덕에 구운 빵", "나무 화덕 빵"),
    ),
    (
        ("rooftop beehives", "honey from bees on the roof"),
        ("Bienenstöcke auf dem Dach", "Honig von Dachbienen"),
        ("colmenas en la azotea", "miel de abejas del tejado"),
        ("옥상 벌통", "옥상 벌꿀"),
    ),
    (
        ("a children's reading room shaped like a ship", "a boat-shaped kids' corner"),
        ("einen Kinderleseraum in Schiffsform", "eine Kinderecke wie ein Boot"),
        ("una sala infantil con forma de barco", "un rincón para niños como un barco"),
        ("배 모양의 어린이 열람실", "배처럼 생긴 아이들 공간"),
    ),
    (
        ("night crossings to the islands", "overnight boats to the islands"),
        ("nächtliche Überfahrten zu den Inseln", "Nachtfähren zu den Inseln"),
        ("travesías nocturnas a las islas", "barcos de noche a las islas"),
        ("섬으로 가는 야간 운항", "밤에 섬으로 가는 배"),
    ),
    (
        ("a greenhouse of carnivorous plants", "insect-eating plants under glass"),
        ("ein Gewächshaus fleischfressender Pflanzen", "Insekten fressende Pflanzen unter Glas"),
        ("un invernadero de plantas carnívoras", "plantas que comen insectos bajo cristal"),
        ("식충 식물 온실", "벌레 먹는 식물 온실"),
    ),
    (
        ("lessons taught outdoors in the forest", "classes held in the woods"),
        ("Unterricht draußen im Wald", "Schulstunden im Wald"),
        ("clases al aire libre en el bosque", "lecciones en el bosque"),
        ("숲 속 야외 수업", "숲에서 하는 수업"),
    ),
    (
        ("a dark beer brewed with smoked malt", "smoky black ale"),
        ("ein dunkles Bier aus Rauchmalz", "rauchiges Schwarzbier"),
        ("una cerveza negra de malta ahumada", "cerveza oscura ahumada"),
        ("훈연 맥아로 빚은 흑맥주", "스모키한 흑맥주"),
    ),
    (
        ("a helicopter landing pad on the roof", "a rooftop helipad"),
        ("einen Hubschrauberlandeplatz auf dem Dach", "ein Dach mit Heliport"),
        ("un helipuerto en la azotea", "una pista para helicópteros en el tejado"),
        ("옥상 헬기 착륙장", "지붕 위 헬리패드"),
    ),
    (
        ("a stadium built into a former quarry", "a ground inside an old stone pit"),
        ("ein Stadion in einem alten Steinbruch", "ein Platz in einer früheren Grube"),
        ("un estadio construido en una antigua cantera", "un campo dentro de una vieja cantera"),
        ("옛 채석장에 지은 경기장", "채석장 안의 구장"),
    ),
    (
        ("a market of floating boats on Sundays", "a Sunday boat market"),
        ("einen schwimmenden Bootsmarkt am Sonntag", "ein sonntäglicher Markt auf Booten"),
        ("un mercado flotante de barcas los domingos", "un mercadillo dominical en barcas"),
        ("일요일 수상 보트 시장", "일요일 배 위 장터"),
    ),
    (
        ("mosaics made of sea shells", "seashell artworks"),
        ("Mosaike aus Muscheln", "Kunstwerke aus Muschelschalen"),
        ("mosaicos hechos de conchas", "obras de arte con conchas marinas"),
        ("조개껍데기 모자이크", "조개로 만든 작품"),
    ),
    (
        ("a rescue centre for injured owls", "a shelter for hurt owls"),
        ("eine Auffangstation für verletzte Eulen", "ein Heim für verwundete Eulen"),
        ("un centro de rescate de búhos heridos", "un refugio para lechuzas lastimadas"),
        ("다친 부엉이 구조 센터", "부상당한 올빼미 보호소"),
    ),
    (
        ("a cable car over the river", "a gondola across the river"),
        ("eine Seilbahn über den Fluss", "eine Gondel über den Strom"),
        ("un teleférico sobre el río", "una góndola que cruza el río"),
        ("강 위를 지나는 케이블카", "강을 건너는 곤돌라"),
    ),
    (
        ("chocolate made from its own cacao", "bean-to-bar chocolate"),
        ("Schokolade aus eigenem Kakao", "selbst hergestellte Schokolade von der Bohne an"),
        ("chocolate de su propio cacao", "chocolate del grano a la tableta"),
        ("직접 기른 카카오로 만든 초콜릿", "빈투바 초콜릿"),
    ),
    (
        ("a choir that sings only in whistles", "a whistling choir"),
        ("einen Chor, der nur pfeift", "ein Pfeifchor"),
        ("un coro que solo canta silbando", "un coro de silbidos"),
        ("휘파람으로만 노래하는 합창단", "휘파람 합창단"),
    ),
]
PLACES = "Velmora Ostrava Kelvane Amberlo Dunmire Rosquet Talvik Pernholm Quillon Saverne Brisa Lunetta".split()


def retrieval_set(seed: int = 7) -> tuple[list[str], list[str]]:
    """(queries, cards): query i's relevant card is card i; every (kind, first fact) pair once."""
    rng = random.Random(seed)
    pairs = [(k, f) for k in range(len(KINDS)) for f in range(len(FACTS))]
    rng.shuffle(pairs)
    queries, cards = [], []
    for n, (k, f) in enumerate(pairs):
        lang = n % 4
        other = rng.choice([x for x in range(len(FACTS)) if x != f])
        name = f"{rng.choice(PLACES)}-{n}"
        kind, fact, extra = KINDS[k][lang], FACTS[f][lang], FACTS[other][lang][0]
        if lang == 0:
            cards.append(f"{name} is a {kind}. It is known for {fact[0]}, and visitors also mention {extra}.")
            queries.append(f"which {kind} has {fact[1]}?")
        elif lang == 1:
            cards.append(f"{name} ist ein(e) {kind}. Bekannt ist es für {fact[0]}; Besucher erwähnen auch {extra}.")
            queries.append(f"welche {kind} hat {fact[1]}?")
        elif lang == 2:
            cards.append(f"{name} es un(a) {kind}. Es conocido por {fact[0]}, y los visitantes mencionan {extra}.")
            queries.append(f"¿qué {kind} tiene {fact[1]}?")
        else:
            cards.append(f"{name}은(는) {kind}이다. {fact[0]}(으)로 알려져 있으며, 방문객들은 {extra}도 언급한다.")
            queries.append(f"{fact[1]}이(가) 있는 {kind}는?")
    return queries, cards


def scores(precision: str, q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Query x document scores, higher is better: float dot, integer dot, or minus the Hamming distance."""
    if precision == "float32":
        return q @ d.T
    if precision in ("int8", "uint8"):
        return q.astype(np.int32) @ d.astype(np.int32).T
    qb = np.unpackbits(q.view(np.uint8), axis=1).astype(np.int32)
    db = np.unpackbits(d.view(np.uint8), axis=1).astype(np.int32)
    return -(qb @ (1 - db).T + (1 - qb) @ db.T)


def ranking_metrics(s: np.ndarray, k: int = 10) -> dict[str, float]:
    """MRR@k and recall@k when query i's one relevant document is document i."""
    own = s[np.arange(len(s)), np.arange(len(s))][:, None]
    rank = (s > own).sum(axis=1) + 1  # ties count in the relevant document's favour
    mrr = float(np.where(rank <= k, 1.0 / rank, 0.0).mean())
    return {"mrr@10": round(mrr, 4), "recall@10": round(float((rank <= k).mean()), 4)}


def rescored(s_bits: np.ndarray, s_float: np.ndarray, top: int = 100) -> np.ndarray:
    """Binary retrieval of the top `top`, re-ranked by float32 scores (outside the top: never found)."""
    out = np.full_like(s_float, -np.inf)
    idx = np.argsort(-s_bits, axis=1, kind="stable")[:, :top]
    rows = np.arange(len(s_float))[:, None]
    out[rows, idx] = s_float[rows, idx]
    return out


def evaluate(qf: np.ndarray, df: np.ndarray, cal: Calibration | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    s_float = scores("float32", qf, df)
    out["float32"] = {**ranking_metrics(s_float), "bytes": qf.shape[1] * 4}
    # ubinary holds binary's bits (each byte + 128): the same Hamming distances, the same ranking
    names = ["binary-sign"] + (["int8", "uint8", "binary"] if cal is not None else [])
    for p in names:
        s = scores(p, quantize(qf, p, cal), quantize(df, p, cal))
        out[p] = {**ranking_metrics(s), "bytes": int(quantize(qf[:1], p, cal).nbytes)}
        if "binary" in p:
            out[p + "+rescore100"] = {**ranking_metrics(rescored(s, s_float)), "bytes": out[p]["bytes"]}
    return out


def _latin(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() or "\u00c0" <= c <= "\u024f" for c in letters) / len(letters) > 0.8


def run(model_dir: Path, distractors: int) -> dict[str, Any]:
    emb = Embedder.load(model_dir, variant="fp32")
    queries, cards = retrieval_set()
    rows = read_rows()
    rng = random.Random(3)
    order = list(range(len(rows)))
    rng.shuffle(order)
    extra = [rows[i]["text"] for i in order[:distractors]]
    pool = [rows[i] for i in order[distractors:]]  # calibration candidates: never in the eval set
    t0 = time.perf_counter()
    qf = emb.encode(queries, "query")
    df = np.vstack([emb.encode(cards, "passage"), emb.encode(extra, "passage")])
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {
        "model": model_dir.name,
        "variant": emb.variant,
        "queries": len(queries),
        "documents": len(df),
        "distractors": len(extra),
        "embed_seconds": round(seconds, 1),
        "manifest_calibration": emb.calibration.method if emb.calibration is not None else None,
        "precisions": evaluate(qf, df, emb.calibration),
    }

    def vectors(texts_rows: list[dict[str, Any]]) -> np.ndarray:
        """Calibration vectors as the export makes them: queries as queries, the rest as passages."""
        out = np.zeros((len(texts_rows), emb.dim), np.float32)
        for kind in ("query", "passage"):
            idx = [i for i, r in enumerate(texts_rows) if (r.get("kind") == "query") == (kind == "query")]
            if idx:
                out[idx] = emb.encode([texts_rows[i]["text"] for i in idx], kind)
        return out

    head = vectors(pool[:512])
    sizes = {}
    for n in (16, 32, 64, 128, 256, 512):
        got = evaluate(qf, df, calibrate(head[:n], n, "benchmark"))
        sizes[str(n)] = {p: got[p]["mrr@10"] for p in ("int8", "uint8", "binary", "binary+rescore100")}
    result["calibration_texts"] = sizes
    latin = [r for r in pool if _latin(r["text"])][:256]
    other = [r for r in pool if not _latin(r["text"])][:256]
    by_script: dict[str, Any] = {}
    cals = {
        "latin": calibrate(vectors(latin), len(latin), "latin"),
        "other": calibrate(vectors(other), len(other), "other"),
    }
    for name, cal in cals.items():
        got = evaluate(qf, df, cal)
        by_script[name] = {p: got[p]["mrr@10"] for p in ("int8", "binary", "binary+rescore100")}
    a, b = cals["latin"], cals["other"]
    by_script["threshold_correlation"] = round(float(np.corrcoef(a.thresholds, b.thresholds)[0, 1]), 4)
    by_script["range_correlation"] = round(float(np.corrcoef(a.high - a.low, b.high - b.low)[0, 1]), 4)
    result["calibration_by_script"] = by_script
    return result


def render(report: dict[str, Any]) -> str:
    lines = []
    for r in report["results"]:
        f = r["precisions"]["float32"]
        lines += [
            f"{r['model']} ({r['variant']}): {r['queries']} queries, {r['documents']:,} documents "
            f"({r['distractors']:,} distractors)",
            "",
            "| precision | bytes / vector | MRR@10 | recall@10 | MRR vs float32 |",
            "|---|---:|---:|---:|---:|",
        ]
        for p, m in r["precisions"].items():
            lines.append(
                f"| {p} | {m['bytes']:,} | {m['mrr@10']:.4f} | {m['recall@10']:.4f} | "
                f"{m['mrr@10'] - f['mrr@10']:+.4f} |"
            )
        lines += ["", "calibration texts -> MRR@10: " + json.dumps(r["calibration_texts"])]
        lines += ["calibrated on one script group -> MRR@10: " + json.dumps(r["calibration_by_script"]), ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--distractors", type=int, default=1500)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--render", type=Path)
    args = ap.parse_args()
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    report = {"machine": machine(), "results": [run(m, args.distractors) for m in args.models]}
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
