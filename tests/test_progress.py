"""runs.Progress (tqdm underneath): what a log file gets, and the byte counter downloads use."""

import io

from tfattack import runs


def test_a_log_gets_plain_lines_and_the_final_count():
    log = io.StringIO()  # not a terminal
    bar = runs.Progress(5, stream=log, log_interval=3600)
    for _ in range(5):
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # The first line (0 done) and the final count, nothing in between: refreshes wait for the log interval.
    assert len(lines) == 2 and "0/5" in lines[0] and "5/5" in lines[-1] and "img/s" in lines[-1], lines
    assert bar.done == 5


def test_downloads_report_totals_so_far_in_bytes():
    log = io.StringIO()
    bar = runs.Progress(None, stream=log, count_bytes=True, description="inception_v3", log_interval=0)
    bar.update_to(1024, 4 * 1024 ** 2)
    bar.update_to(4 * 1024 ** 2, 4 * 1024 ** 2)
    bar.close()
    last = log.getvalue().splitlines()[-1]
    assert bar.done == 4 * 1024 ** 2 and last.startswith("inception_v3:") and "4.00M/4.00M " in last and "B/s" in last, last
