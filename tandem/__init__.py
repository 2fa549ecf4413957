"""tandem: hybrid batch + streaming personalization on Feast, Spark, Kafka, Redis, MLflow and BentoML."""

__version__ = "0.1.0"
