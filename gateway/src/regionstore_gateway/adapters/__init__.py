"""The gateway's adapters to Kafka, Redis and the regional stores: the command topic, the read
queries, idempotency records, the audit trail, clock node leases and the Redis budget."""
