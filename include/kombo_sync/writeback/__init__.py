"""Result write-back (job 3): warehouse results -> Kombo, once, as mapped, nothing lost (docs/writeback.md).

`source` reads the team's query in chunks, `mapping` turns rows into validated payloads, `sender` drains the
result outbox concurrently, `job` holds the functions the DAG `kombo_result_writeback` calls.
"""
