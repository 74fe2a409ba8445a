"""Reading, writing and generating the videos and view shards CoCon trains on."""
