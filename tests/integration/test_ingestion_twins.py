"""Identical documents at two URIs in one run are embedded once: the second gets the first's
vectors (before this, twins were found only once the first was committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import connectors

pytestmark = pytest.mark.slow

POLICY = "# Travel policy\n\n" + "\n\n".join(
    f"Rule {i}: trains are booked in second class for trips under {i + 3} hours." for i in range(12)
)


def test_twins_in_one_run_are_embedded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.container import Container
    from appliance.settings import load_settings

    src = tmp_path / "src"
    (src / "hr").mkdir(parents=True)
    (src / "archive").mkdir()
    (src / "hr" / "travel.md").write_text(POLICY)
    (src / "archive" / "travel-2025.md").write_text(POLICY)  # the same bytes, another name
    (src / "hr" / "canteen.md").write_text("# Canteen\n\nLunch is served from noon to two.")
    container = Container(load_settings(data_dir=tmp_path / "data", log_level="WARNING"))
    embedded: list[str] = []
    try:
        embedder = container.embedder
        real = embedder.embed_documents

        def spy(texts: list[str], threads: int | None = None) -> np.ndarray:
            embedded.extend(texts)
            return real(texts, threads=threads)

        monkeypatch.setattr(embedder, "embed_documents", spy)
        ext = container.settings.ingestion.extensions
        report = container.jobs.run([connectors.for_source(str(src), extensions=ext)], None, [], "t")
        assert report["failed"] == [] and report["added"] == 3 and report["reused"] == 1, report

        docs = {Path(d.uri).name: d for d in container.ledger.list("default")}
        twin, first = docs["travel-2025.md"], docs["travel.md"]
        assert len(twin.chunk_ids) == len(first.chunk_ids) > 0
        texts = lambda d: sorted(c.text for c, _ in container.store.get_with_vectors("default", d.chunk_ids))  # noqa: E731
        assert texts(twin) == texts(first)
        # Each distinct chunk text went to the embedder once, not twice.
        assert len(embedded) == len(set(embedded)) == len(first.chunk_ids) + len(docs["canteen.md"].chunk_ids)
        vectors = {c.text: v for c, v in container.store.get_with_vectors("default", twin.chunk_ids)}
        for c, v in container.store.get_with_vectors("default", first.chunk_ids):
            assert np.allclose(vectors[c.text], v)
    finally:
        container.close()
