"""After the search: the finalists measured again against the baseline (paired blocks of warm
workers, or interleaved rounds of fresh ones) and the verdict, then the concurrency sweep."""
