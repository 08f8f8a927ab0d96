"""``python -m bench``: run every benchmark and print its table."""

from bench import hot_path

if __name__ == "__main__":
    hot_path.main()
