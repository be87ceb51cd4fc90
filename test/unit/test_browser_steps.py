"""Unit tests of the browser's steps (test/e2e/browser_driver.py) without a browser:
check_steps (what run_browser refuses before starting Chromium), the "fill"
templates, the masking of typed values, and the new steps done against a fake
WebDriver (upload, select, text of an attribute, fill from a template).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e import browser_driver as driver
from e2e.browser_driver import MASK, Run, StepError, check_steps, masked, template_names

GOOD = [
    {"get": "https://www.alice.example/wp-login.php"},
    {"fill": "#user_login", "value": "alice"},
    {"click": "#wp-submit"},
    {"submit": None},
    {"wait_for": "#wpadminbar", "contains": "Howdy", "timeout": 30},
    {"upload": "#async-upload", "file": "/tmp/x/photo.png"},
    {"select": "select[name=_status]", "option": "Published"},
    {"text": ".copy-attachment-url", "attribute": "data-clipboard-text", "name": "image_url"},
    {"text": "h1"},
    {"fill": "#content", "template": '<img src="{image_url}" alt="{{x}}">'},
    {"screenshot": "published"},
]


def problems_of(*steps: dict) -> list[str]:
    return check_steps(list(steps))


def test_a_good_list_has_no_problems():
    assert check_steps(GOOD) == []


@pytest.mark.parametrize("steps", [None, [], {}, "get", [["get"]]])
def test_the_steps_are_a_non_empty_list_of_dicts(steps):
    assert check_steps(steps)


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        ({"get": "file:///etc/passwd"}, "http(s) URL"),
        ({"click": "a", "get": "https://x/"}, "exactly one of"),
        ({"click": "a", "value": "x"}, "unknown keys ['value']"),
        ({"fill": "#a"}, "either 'value'"),
        ({"fill": "#a", "value": "x", "template": "y"}, "either 'value'"),
        ({"fill": "#a", "value": 3}, "'value' is a string"),
        ({"fill": "", "value": "x"}, "a CSS selector"),
        ({"upload": "#f"}, "'file', the absolute path"),
        ({"upload": "#f", "file": "photo.png"}, "'file', the absolute path"),
        ({"upload": "#f", "file": ["/tmp/a"]}, "'file' is a string"),
        ({"upload": None, "file": "/tmp/a"}, "a CSS selector"),
        ({"upload": "#f", "file": "/tmp/a", "option": "x"}, "unknown keys ['option']"),
        ({"select": "#s"}, "'option', the text"),
        ({"select": "#s", "option": ""}, "'option', the text"),
        ({"select": "#s", "option": 1}, "'option' is a string"),
        ({"select": "#s", "option": "x", "file": "/a"}, "unknown keys ['file']"),
        ({"text": "a", "attribute": ""}, "'attribute' names an attribute"),
        ({"text": "a", "attribute": None}, "'attribute' is a string"),
        ({"click": "a", "attribute": "href"}, "unknown keys ['attribute']"),
        ({"screenshot": "../x"}, "a file name"),
        ({"click": "a", "timeout": 0}, "'timeout' in seconds > 0"),
    ],
)
def test_each_bad_step_is_told(step, problem):
    found = problems_of(step)
    assert any(problem in text for text in found), found


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("<img src='{image_url}'>", "template names ['image_url']: kept by no earlier text"),
        ("{url} {nope}", "template names ['nope']: kept by no earlier text"),
        ("{}", "template {}"),
        ("{0}", "template {0}"),
        ("{url.real}", "template {url.real}"),
        ("{url[0]}", "template {url[0]}"),
        ("{url!r}", "template {url}"),
        ("{url:>9}", "template {url}"),
        ("{url", "template"),
        ("url}", "template"),
    ],
)
def test_a_template_names_only_texts_kept_before(template, problem):
    found = problems_of({"text": "a", "name": "url"}, {"fill": "#c", "template": template})
    assert len(found) == 1 and problem in found[0], found


def test_a_template_may_not_use_a_text_kept_after_it():
    steps = [{"fill": "#c", "template": "{url}"}, {"text": "a", "name": "url"}]
    assert check_steps(steps) == ["step 0 (fill): template names ['url']: kept by no earlier text"]


def test_template_names_and_literal_braces():
    assert template_names("{{not}} {a} and {b_2}{a}") == ["a", "b_2", "a"]
    assert template_names("no names") == []
    with pytest.raises(ValueError):
        template_names("{a b}")


def test_a_typed_value_is_masked_and_a_template_is_not():
    assert masked({"fill": "#p", "value": "secret"}) == {"fill": "#p", "value": MASK}
    step = {"fill": "#c", "template": "{u}"}
    assert masked(step) == step


class FakeElement:
    """What a step uses of a WebElement."""

    def __init__(self, tag: str, displayed: bool = True, **attributes: str) -> None:
        self.tag_name = tag
        self.displayed = displayed
        self.attributes = attributes
        self.typed: list[str] = []
        self.text = attributes.get("text", "")

    def is_displayed(self) -> bool:
        return self.displayed

    def get_attribute(self, name: str) -> str | None:
        return self.attributes.get(name)

    def clear(self) -> None:
        self.typed.clear()

    def send_keys(self, text: str) -> None:
        self.typed.append(text)


class FakeDriver:
    """A page of elements by CSS selector."""

    def __init__(self, elements: dict[str, FakeElement]) -> None:
        self.elements = elements

    def find_element(self, by: str, selector: str) -> FakeElement:
        from selenium.common.exceptions import NoSuchElementException

        if selector not in self.elements:
            raise NoSuchElementException(selector)
        return self.elements[selector]


def fake_run(elements: dict[str, FakeElement]) -> Run:
    run = Run.__new__(Run)  # no chromedriver: only what step() uses
    run.driver = FakeDriver(elements)
    run.last_filled = None
    run.texts = {}
    return run


def test_text_of_an_attribute_is_kept_and_fills_a_template():
    copy = FakeElement("button", displayed=False, **{"data-clipboard-text": "https://w/u/a.png"})
    content = FakeElement("textarea")
    run = fake_run({".copy": copy, "#content": content})
    step = {"text": ".copy", "attribute": "data-clipboard-text", "name": "url"}
    assert run.step(step) == {"text": "https://w/u/a.png", "name": "url"}
    run.step({"fill": "#content", "template": '<img src="{url}" alt="{{x}}">'})
    assert content.typed == ['<img src="https://w/u/a.png" alt="{x}">']
    assert run.last_filled == "#content"


def test_a_missing_attribute_fails_the_step():
    run = fake_run({"a": FakeElement("a")})
    with pytest.raises(StepError, match="no attribute 'href'"):
        run.step({"text": "a", "attribute": "href", "timeout": 0.1})


def test_a_visible_text_needs_a_visible_element():
    run = fake_run({"p": FakeElement("p", displayed=False, text="hidden")})
    with pytest.raises(StepError, match="no visible 'p' within"):
        run.step({"text": "p", "timeout": 0.1})


def test_upload_types_the_path_into_a_file_input(tmp_path: Path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG")
    field = FakeElement("input", displayed=False, type="file")
    run = fake_run({"#async-upload": field})
    assert run.step({"upload": "#async-upload", "file": str(photo)}) == {}
    assert field.typed == [str(photo)]


@pytest.mark.parametrize(
    ("elements", "error"),
    [
        ({"#f": FakeElement("input", type="text")}, "is no <input type=file>"),
        ({"#f": FakeElement("textarea")}, "is no <input type=file>"),
        ({}, "no file input '#f' within"),
    ],
)
def test_upload_fails_on_anything_but_a_file_input(tmp_path: Path, elements: Any, error: str):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG")
    with pytest.raises(StepError, match=error):
        fake_run(elements).step({"upload": "#f", "file": str(photo), "timeout": 0.1})


def test_upload_fails_on_a_missing_file(tmp_path: Path):
    field = FakeElement("input", type="file")
    with pytest.raises(StepError, match=r"no file .* to upload"):
        fake_run({"#f": field}).step({"upload": "#f", "file": str(tmp_path / "nothing.png")})
    assert field.typed == []


class FakeOption(FakeElement):
    """An <option>: clicking it selects it."""

    def __init__(self, text: str) -> None:
        super().__init__("option", text=text)
        self.selected = False

    def value_of_css_property(self, name: str) -> str:
        return "block" if name == "display" else "visible" if name == "visibility" else "1"

    def is_selected(self) -> bool:
        return self.selected

    def is_enabled(self) -> bool:
        return True

    def click(self) -> None:
        self.selected = True


class FakeSelect(FakeElement):
    """A <select> of options, found as selenium's Select looks for them."""

    def __init__(self, *texts: str) -> None:
        super().__init__("select")
        self.options = [FakeOption(text) for text in texts]

    def get_dom_attribute(self, name: str) -> str | None:
        return None

    def find_elements(self, by: str, value: str) -> list[FakeOption]:
        if by == "tag name":
            return self.options
        return [option for option in self.options if f'"{option.text}"' in value]


def test_select_chooses_the_option_by_its_text():
    menu = FakeSelect("Published", "Pending Review", "Draft")
    fake_run({"#s": menu}).step({"select": "#s", "option": "Pending Review"})
    assert [option.selected for option in menu.options] == [False, True, False]


def test_select_tells_the_options_when_the_one_asked_is_missing():
    run = fake_run({"#s": FakeSelect("Published", "Draft")})
    with pytest.raises(
        StepError, match=r"no option 'Public' in '#s'; it has \['Published', 'Draft'\]"
    ):
        run.step({"select": "#s", "option": "Public"})


def test_select_fails_on_anything_but_a_visible_select():
    run = fake_run({"#s": FakeElement("input"), "#h": FakeSelect("A")})
    run.driver.elements["#h"].displayed = False
    with pytest.raises(StepError, match="is no <select>"):
        run.step({"select": "#s", "option": "Published"})
    with pytest.raises(StepError, match="no visible '#h' within"):
        run.step({"select": "#h", "option": "A", "timeout": 0.1})


def test_every_action_is_documented():
    for action in driver.ACTIONS:
        assert f'{{"{action}": ' in driver.__doc__, action
