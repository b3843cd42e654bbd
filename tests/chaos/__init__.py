"""`make chaos`: SIGKILL every process kind under load, then prove nothing acknowledged was lost.

A round runs writer clients (singles, batches, moves between regions, deletes) against the
gateway while :mod:`tests.chaos.faults` kills the gateway, the writer, the replicator, recovery in
the middle of a drain, the Kafka broker, Redis and every process of every regional store, one at a
time. Then it settles and proves, through the stores' audit (placement from the zip, every
field, strays) and the command topic, that every acknowledged write is at its final content
where it belongs, no deleted customer is live, and no write answered "not accepted" was applied.
With ``--faults`` (`make chaos FAULTS=...`), :mod:`tests.chaos.nemesis` mixes the kills with link
faults, pauses and clock steps from a printed seed, and :mod:`tests.chaos.measure` says what each
did to writes and reads (docs/faults.md).
"""
