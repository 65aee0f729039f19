"""Property tests: whatever text users put in a record, the page's markup is ours, and the
evidence readers never fail on odd shapes."""

from __future__ import annotations

import copy
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.report import collect, render_html
from pipeline.report.evidence import metrics
from tests.support.report import release_story

TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "span", "div",
        "code", "a", "table", "tr", "th", "td", "ul", "li", "br", "svg", "text", "rect",
        "line", "polyline", "circle", "path"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs |= {name for name, _ in attrs}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return collect(release_story(tmp_path_factory.mktemp("fuzz")).repo.path, "dev")


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=60))
def test_user_text_never_becomes_markup(base: dict, text: str) -> None:
    data = copy.deepcopy(base)
    data["rollbacks"][-1]["reasons"] = [text]
    data["rollbacks"][-1]["message"] = text
    data["steps"][0]["who"] = text
    data["record"]["policy"]["results"][0]["message"] = text
    data["record"]["source"]["repository"] = text
    data["proofs"]["image"]["href"] = text
    html = render_html(data)
    parser = _Tags()
    parser.feed(html)
    assert parser.tags <= TAGS
    assert not any(a.startswith("on") for a in parser.attrs)
    assert 'href="javascript' not in html.lower() and 'href="data:' not in html.lower()


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10),
                                                                       children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(measurement=st.dictionaries(
    st.sampled_from(["metrics", "summary", "requests", "success_rate", "p99_seconds", "ok",
                     "other"]), json_values, max_size=6))
def test_metrics_reader_takes_any_shape(measurement: dict) -> None:
    for m in metrics(measurement):
        assert isinstance(m["name"], str) and isinstance(m["ok"], bool)
        assert m["value"] is None or isinstance(m["value"], float)


def test_the_fixture_page_is_parsed(base: dict) -> None:
    parser = _Tags()
    parser.feed(render_html(base))
    assert {"svg", "table", "a"} <= parser.tags
