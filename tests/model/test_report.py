"""`make report` on the slice: one self-contained page with every section, as Chromium shows it."""

import re

import pytest

from model.analysis.report import build_report
from tests.browser import visit_file


@pytest.fixture(scope="module")
def report(settings, table, metrics, tmp_path_factory):
    cheap = settings.with_overrides(
        {
            "evaluation": {"knn_max_train_rows": 2000, "cv_folds": 2, "permutation_rows": 1000, "explain_rows": 20},
            "train": {"max_epochs": 1},
            "paths": {"report_dir": tmp_path_factory.mktemp("report")},
        }
    )
    return build_report(cheap)


def test_the_report_is_one_page_with_every_section_and_its_figures(report, metrics):
    page = report.read_text()
    titles = re.findall(r"<h2 id='s\d+'>([^<]+)</h2>", page)
    assert titles == [
        "Data and exploratory analysis",
        "Data quality",
        "Drift",
        "Baselines and validation over time",
        "Interpretation and decision threshold",
    ]
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]{1000,})'", page)
    assert len(images) >= 14  # every figure is embedded: the page stands alone
    assert "src='http" not in page and 'src="http' not in page
    assert metrics["model_version"] in page


def test_chromium_shows_the_report_with_every_image_and_no_console_error(report, browser):
    seen = visit_file(browser, report)
    assert seen.problems == []
    assert len(seen.images) >= 14 and all(image["loaded"] for image in seen.images)
    assert "Interpretation and decision threshold" in seen.text
    assert seen.screenshot.stat().st_size > 10_000  # the page as it renders, beside it
