"""The stream path: replay/produce events into Kafka, and the consumer-group processor that keeps session
and trending features current in the online store (and logs them offline) with exactly-once effect."""
