"""tandem's data side: dataset layout, producers (generator, MovieLens adapter), Spark batch jobs and the stream."""
