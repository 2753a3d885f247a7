-- Completed assessment results to write back to Kombo (job `kombo_result_writeback`).
--
-- The team owns this query. It runs on the warehouse connection (`kombo_warehouse`) with two bind parameters,
-- :window_start and :window_end (UTC), and must return the rows whose updated_at lies in
-- [:window_start, :window_end). Column contract (docs/writeback.md):
--   order_id            Kombo assessment order id (or NULL and give invitation_id: joined through the state store)
--   invitation_id       the platform's invitation id (optional when order_id is given)
--   status              'completed' or 'cancelled'
--   score, max_score    numbers, 0 <= score <= max_score (optional)
--   completed_at        when the candidate finished (UTC; updated_at stands in when NULL)
--   result_url          https:// link to the result in the platform
--   report_url          https:// link Kombo may download (sent as data_url), or NULL
--   report_bytes        the report file itself (binary), used when there is no https report_url
--   report_name, report_content_type   file name with extension, MIME type
--   sub_results         JSON array of {id, label, score, max, status}
--   attributes          JSON array of {label, value} (or an object {label: value})
--   updated_at          last change of the row (UTC): the incremental cursor
SELECT
    r.order_id,
    r.invitation_id,
    r.status,
    r.score,
    r.max_score,
    r.completed_at,
    r.result_url,
    r.report_url,
    r.report_bytes,
    r.report_name,
    r.report_content_type,
    r.sub_results,
    r.attributes,
    r.updated_at
FROM assessment_results AS r
WHERE r.updated_at >= :window_start
  AND r.updated_at < :window_end
ORDER BY r.updated_at, r.order_id
