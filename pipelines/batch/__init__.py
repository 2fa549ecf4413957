"""The batch path: validate raw events, compute user and item features with Spark as of a time,
publish them to the offline store, build point-in-time training sets through Feast, and
materialize the latest values into the online store (`tandem batch run`)."""
