"""Re-crawl timings on a blog-sized local site (evaluation/local_blog.py): a cold crawl, an
unchanged re-crawl (sitemap lastmod; and validators only, answered 304), and a re-crawl after
one article changed. The sitemap fetch is included; page downloads are counted.

    python -m evaluation.benchmark_freshness [--pages 60] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from evaluation.local_blog import LocalBlog
from indexing.crawler import crawl_site


def _timed(blog: LocalBlog, cache: str) -> tuple[float, int]:
    before = blog.article_answers(200)
    start = time.perf_counter()
    crawl_site(blog.url("/sitemap.xml"), cache_dir=cache, progress=False)
    return time.perf_counter() - start, blog.article_answers(200) - before


def measure(pages: int, repeat: int, lastmod: bool) -> dict:
    """Median seconds and article downloads of each kind of crawl."""
    results: dict[str, list] = {"cold": [], "unchanged": [], "one changed": []}
    downloads: dict[str, int] = {}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as cache, LocalBlog(pages, lastmod=lastmod,
                                                                words=900) as blog:
            for kind in results:
                if kind == "one changed":
                    blog.edit("/articles/a7/", version=len(results[kind]) + 2)
                seconds, fetched = _timed(blog, cache)
                results[kind].append(seconds)
                downloads[kind] = fetched
    return {kind: {"seconds": round(statistics.median(times), 4),
                   "article_downloads": downloads[kind]} for kind, times in results.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ["no_proxy"] = "*"
    report = {"sitemap lastmod + validators": measure(args.pages, args.repeat, lastmod=True),
              "validators only (304s)": measure(args.pages, args.repeat, lastmod=False)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.pages} pages, median of {args.repeat}")
    for site, kinds in report.items():
        for kind, figures in kinds.items():
            print(f"  {site:30} {kind:12} {figures['seconds'] * 1000:8.1f} ms  "
                  f"{figures['article_downloads']} article downloads")


if __name__ == "__main__":
    main()
