"""The HTML stepper in a real headless Chromium: keys and buttons move the step, the page shows the trace."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from harvest.inspect import find_traces
from harvest.inspect.html import render_html
from harvest.inspect.steps import iter_steps

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update "
    "--disable-sync --no-first-run --window-size=1280,820"
).split()

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _state(driver: object) -> tuple[int, int, dict[str, str], str]:
    """(step index, highlighted line, current frame's variables, event text) as the page shows them."""
    from selenium.webdriver.common.by import By

    page = driver  # type: ignore[assignment]
    step = int(page.find_element(By.ID, "wt-viewer").get_attribute("data-step"))
    line = int(page.find_element(By.CSS_SELECTOR, ".wt-line.wt-current").get_attribute("data-lineno"))
    rows = page.find_elements(By.CSS_SELECTOR, ".wt-frame-current tr[data-name]")
    variables = {r.get_attribute("data-name"): r.find_element(By.CSS_SELECTOR, ".wt-value").text for r in rows}
    return step, line, variables, page.find_element(By.ID, "wt-event").text


def _open(driver: object, trace: dict, page: Path) -> list:
    """Write `trace`'s HTML stepper to `page`, open it; the steps of the trace (Python's view)."""
    page.write_text(render_html(trace), encoding="utf-8")
    driver.get(page.as_uri())  # type: ignore[attr-defined]
    return list(iter_steps(trace["events"]))


def _script_trace(name: str, source: str) -> dict:
    """A trace row of `source` run as a script (traced here, in this interpreter)."""
    from schemas.convert import stream_object_to_row
    from tracer.api import trace_script

    stream = trace_script(f"{name}.py", source=source, program_id=name)
    return stream_object_to_row(stream, {"source": source, "image": "local"})


def test_stepping_with_keys_and_buttons_shows_the_trace(browser: object, sample_shards: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    (trace,) = find_traces(sample_shards, program_id="nested")
    driver = browser  # type: ignore[assignment]
    steps = _open(driver, trace, tmp_path / "viewer.html")
    viewer = driver.find_element(By.ID, "wt-viewer")
    assert _state(driver)[:3] == (0, steps[0].lineno, dict(steps[0].locals))
    presses = 0
    # walk into square() and out again; check every step against the Python view of the trace
    for target in (3, 7, 12, len(steps) - 1):
        for _ in range(target - presses):
            viewer.send_keys(Keys.ARROW_RIGHT)
        presses = target
        index, line, variables, event = _state(driver)
        assert index == target
        assert line == steps[target].lineno
        assert variables == dict(steps[target].locals)
        assert event.startswith(steps[target].describe()[:10])
        frames = driver.find_elements(By.CSS_SELECTOR, ".wt-frame")
        assert [f.get_attribute("data-function") for f in frames] == [fr.function for fr in steps[target].stack]
    assert steps[-1].kind == "return"
    result = driver.find_element(By.CSS_SELECTOR, ".wt-frame-current .wt-result-return .wt-result-value")
    assert result.text == steps[-1].arg == trace["return_value"]
    viewer.send_keys(Keys.ARROW_RIGHT)  # past the end: stays on the last step
    assert _state(driver)[0] == len(steps) - 1
    driver.find_element(By.ID, "wt-prev").click()
    assert _state(driver)[0] == len(steps) - 2
    viewer.send_keys(Keys.HOME)
    assert _state(driver)[0] == 0
    # the slider jumps straight to a step (as a drag would)
    driver.execute_script(
        "var s = document.getElementById('wt-slider'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input'));",
        9,
    )
    assert _state(driver)[:3] == (9, steps[9].lineno, dict(steps[9].locals))
    for _ in range(9):
        driver.find_element(By.ID, "wt-next").click()
    assert _state(driver)[:3] == (18, steps[18].lineno, dict(steps[18].locals))
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "viewer.png"))


def test_deleted_variables_leave_and_hostile_values_stay_text(
    browser: object, sample_shards: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    (trace,) = find_traces(sample_shards, program_id="shout")
    # a value that would end the embedded <script> or inject markup if it were not escaped
    hostile = "'</script><img src=x onerror=alert(1)>'"
    trace["events"][0]["locals"][0]["value"] = hostile
    driver = browser  # type: ignore[assignment]
    steps = _open(driver, trace, tmp_path / "hostile.html")
    assert _state(driver)[2] == {"words": hostile}
    assert not driver.find_elements(By.CSS_SELECTOR, "img")
    viewer = driver.find_element(By.ID, "wt-viewer")
    deleted_at = next(s.index for s in steps[1:] if "tmp" not in s.locals and "tmp" in steps[s.index - 1].locals)
    for _ in range(deleted_at):
        viewer.send_keys(Keys.ARROW_RIGHT)
    index, _, variables, _ = _state(driver)
    assert index == deleted_at and "tmp" not in variables and variables == dict(steps[deleted_at].locals)


def test_a_script_trace_starts_at_the_module_and_keeps_its_source(browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    source = "total = 0\nfor i in range(3):\n    total += i\nprint(total)\n"
    trace = _script_trace("script", source)
    driver = browser  # type: ignore[assignment]
    steps = _open(driver, trace, tmp_path / "script.html")
    assert len(driver.find_elements(By.CSS_SELECTOR, ".wt-line")) == len(source.splitlines())
    assert driver.find_element(By.CSS_SELECTOR, "#wt-output .wt-stdout").text == "3"
    viewer = driver.find_element(By.ID, "wt-viewer")
    for index in range(1, len(steps)):
        viewer.send_keys(Keys.ARROW_RIGHT)
        if steps[index].kind == "line":
            step, line, variables, _ = _state(driver)
            assert (step, line) == (index, steps[index].lineno)
            assert variables == dict(steps[index].locals)
    assert variables["total"] == "3"


def test_variables_named_like_object_properties_are_shown(browser: object, tmp_path: Path) -> None:
    """Names such as constructor or __proto__ are variables like any other (not a plain {}'s keys)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    names = ["constructor", "toString", "valueOf", "hasOwnProperty", "__proto__", "__defineGetter__"]
    body = "".join(f"    {name} = {i}\n" for i, name in enumerate(names))
    source = f"def f():\n{body}    del constructor\n    del __proto__\n    return toString\n\nf()\n"
    trace = _script_trace("props", source)
    driver = browser  # type: ignore[assignment]
    steps = _open(driver, trace, tmp_path / "props.html")
    viewer = driver.find_element(By.ID, "wt-viewer")
    seen: set[str] = set()
    for index, step in enumerate(steps):
        if index:
            viewer.send_keys(Keys.ARROW_RIGHT)
        assert int(viewer.get_attribute("data-step")) == index
        rows = driver.find_elements(By.CSS_SELECTOR, ".wt-frame-current tr[data-name]")
        variables = {r.get_attribute("data-name"): r.find_element(By.CSS_SELECTOR, ".wt-value").text for r in rows}
        assert variables == dict(step.locals)
        changed = {r.get_attribute("data-name") for r in rows if "wt-changed" in r.get_attribute("class")}
        assert changed == {item["name"] for item in trace["events"][index]["locals"]} & set(variables)
        seen |= set(variables)
    assert set(names) <= seen
