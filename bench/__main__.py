"""``make bench``: every benchmark, each printing ratios measured side by side in one run."""

from bench import hot_path

if __name__ == "__main__":
    hot_path.main()
