"""Structure-aware chunking: tables and lists stay with their heading, section paths nest, small
sections are packed together, no fragments, headings on every chunk, overlap across elements."""

from __future__ import annotations

from appliance.ingestion.chunking import chunk_elements, split_to_tokens


def tokens(text: str) -> int:
    # a stand-in tokenizer: one token per word or CJK character, plus [CLS]/[SEP]
    return sum(len(w) if any("\u4e00" <= c <= "\u9fff" for c in w) else 1 for w in text.split()) + 2


def el(kind: str, text: str, i: int, depth: int | None = None, **meta: object) -> dict:
    metadata: dict = {"page_number": 1, **meta}
    if depth is not None:
        metadata["category_depth"] = depth
    return {"type": kind, "element_id": f"e{i}", "text": text, "metadata": metadata}


def test_table_and_list_stay_with_their_heading_and_paths_nest() -> None:
    filler = " ".join(["Background paragraph about the plant and its many turbines."] * 6)
    elements = [
        el("Title", "Operations Manual", 0, depth=0),
        el("NarrativeText", filler, 1),
        # Sections of a quarter of the target or more: smaller ones would be packed together.
        el("Title", "Spare parts", 2, depth=1),
        el(
            "Table",
            "Part Stock Bearing 12 Gearbox 3 Blade 6 Brake pad 40 Yaw motor 2 Pitch motor 3",
            3,
            text_as_html="<table><tr><td>Bearing</td></tr></table>",
        ),
        el("Title", "Checklist", 4, depth=1),
        el("ListItem", "Check the oil level", 5),
        el("ListItem", "Inspect the blades and the tower bolts", 6),
        el("Title", "Appendix", 7, depth=0),
        el("NarrativeText", filler, 8),
    ]
    chunks = chunk_elements(elements, tokens, target_tokens=60, max_tokens=128)
    by_text = {c.text: c for c in chunks}
    table = next(c for c in chunks if "Gearbox 3" in c.text)
    assert "Spare parts" in table.text  # the heading travels with its table
    assert table.section_path == ("Operations Manual", "Spare parts")
    checklist = next(c for c in chunks if "Inspect the blades" in c.text)
    assert "Checklist" in checklist.text and "Check the oil level" in checklist.text
    assert checklist.section_path == ("Operations Manual", "Checklist")
    appendix = [c for c in chunks if c.text.startswith("Appendix")]
    assert appendix and appendix[0].section_path == ("Appendix",)
    assert all(tokens(t) <= 60 for t in by_text)


def test_small_sections_are_packed_with_their_neighbours() -> None:
    elements = [
        el("Title", "Contacts", 0, depth=0),
        el("Title", "IT", 1, depth=1),
        el("NarrativeText", "Call 4455.", 2),
        el("Title", "Security", 3, depth=1),
        el("NarrativeText", "Call 7700.", 4),
    ]
    chunks = chunk_elements(elements, tokens, target_tokens=60, max_tokens=128)
    assert [c.text for c in chunks] == ["Contacts\n\nIT\n\nCall 4455.\n\nSecurity\n\nCall 7700."]
    assert chunks[0].section_path == ("Contacts",)  # the headings both sections share


def test_cjk_without_spaces_is_split_at_sentence_ends_under_the_limit() -> None:
    text = "风力发电机的保修期为七年。" * 40
    pieces = split_to_tokens(text, tokens, limit=64, overlap_tokens=0)
    assert len(pieces) > 1
    assert all(tokens(p) <= 64 for p in pieces)
    assert all(p.endswith("。") for p in pieces)  # cut at full stops, not mid-word
    assert "".join(pieces) == text


def test_a_long_run_without_spaces_is_cut_into_bounded_pieces() -> None:
    text = "x" * 100_000

    def chars(t: str) -> int:  # a worst case: every 4 letters a token
        return len(t) // 4 + 2

    pieces = split_to_tokens(text, chars, limit=256)
    assert all(chars(p) <= 256 for p in pieces)
    assert "".join(pieces) == text


# -- hygiene: no fragments, headings travel with their section, overlap across elements ----------


def test_no_chunk_is_a_fragment() -> None:
    body = "".join(f"第{i}条 数据中心的温度应控制在十八至二十七度之间，每两小时巡检一次。" for i in range(8))
    elements = [
        el("Title", "运维规范", 0, depth=0),
        el("NarrativeText", body, 1),
        el("NarrativeText", "安", 2),  # a stray character, as OCR or a broken line leaves them
        el("Title", "附录", 3, depth=1),
    ]
    chunks = chunk_elements(elements, tokens, target_tokens=60, max_tokens=128)
    assert len(chunks) > 1
    assert min(tokens(c.text) - 2 for c in chunks) >= 6  # 10% of the target, not one character
    joined = "".join(c.text for c in chunks)
    assert "安" in joined and "附录" in joined  # merged into a neighbour, not dropped


def test_every_chunk_of_a_long_section_starts_with_its_heading() -> None:
    sentences = " ".join(f"Blade {i} of the rotor is inspected every spring for cracks." for i in range(12))
    elements = [
        el("Title", "Maintenance", 0, depth=0),
        el("Title", "Rotor blades", 1, depth=1),
        el("NarrativeText", sentences, 2),
        el("Title", "Trailing heading", 3, depth=1),
    ]
    chunks = chunk_elements(elements, tokens, target_tokens=40, max_tokens=128)
    rotor = [c for c in chunks if "Blade" in c.text]
    assert len(rotor) > 2
    assert all(c.text.startswith("Maintenance\n\nRotor blades\n\n") for c in rotor)
    assert all(c.section_path == ("Maintenance", "Rotor blades") for c in rotor if "Trailing" not in c.text)
    assert all(tokens(c.text) <= 40 for c in rotor)
    headings = {"Maintenance", "Rotor blades", "Trailing heading"}
    assert not any(set(c.text.split("\n\n")) <= headings for c in chunks)  # no heading stands alone


def test_neighbouring_chunks_overlap_across_elements() -> None:
    paragraphs = [
        " ".join(f"Paragraph {p} sentence {s} covers the gearbox oil." for s in range(3)) for p in range(6)
    ]
    elements = [el("Title", "Gearbox", 0, depth=0)] + [
        el("NarrativeText", text, i + 1) for i, text in enumerate(paragraphs)
    ]
    chunks = chunk_elements(elements, tokens, target_tokens=60, max_tokens=128, overlap_tokens=10)
    assert len(chunks) >= 3
    for before, after in zip(chunks, chunks[1:], strict=False):
        last = before.text.rsplit(". ", 1)[-1].rstrip(".")
        body = after.text.removeprefix("Gearbox\n\n")
        assert body.startswith(last), (before.text, after.text)  # the end of one opens the next
        assert not body.startswith(before.text.removeprefix("Gearbox\n\n")[:40])  # but only the end
