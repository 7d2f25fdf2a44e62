"""The seeds' SQL, copied verbatim (each block names its place in ../shared/seeds/); run by tests/test_seed_sql.py
and tests/test_demo.py on both databases.

Not copied because they are not SQL for the store: seed 004's `\\dt` (a psql meta-command; conversation_logs and
training_samples are views here, so psql lists them with `\\dv`) and seed 000's `CREATE POLICY ... ON
storage.objects` (Supabase Storage's bucket policy, set in Supabase, not in this database).
"""

from __future__ import annotations

# (seed, place in the seed, the SQL as written)
SEED_SQL: list[tuple[str, str, str]] = [
    ("004", 'Step 4 "Test the System", 2. Check current stats',
     """SELECT * FROM training_queue LIMIT 10;"""),
    ("004", 'Available Commands, "Database Queries": View training queue',
     """SELECT * FROM training_queue WHERE review_status='needs-review' LIMIT 20;"""),
    ("004", 'Available Commands, "Database Queries": Daily statistics',
     """SELECT * FROM daily_training_stats ORDER BY date DESC LIMIT 7;"""),
    ("004", 'Available Commands, "Database Queries": Model versions',
     """SELECT version, status, test_accuracy, traffic_percentage FROM model_versions;"""),
    ("004", 'Available Commands, "Database Queries": Recent conversations',
     """SELECT user_message, nlu_intent, nlu_confidence, review_status FROM conversation_logs ORDER BY created_at DESC LIMIT 20;"""),  # noqa: E501
    ("004", 'Monitoring & Debugging, "Check if Conversations Are Being Captured"',
     """-- Latest 10 conversations
SELECT
  user_message,
  nlu_intent,
  nlu_confidence,
  nlu_provider,
  review_status,
  created_at
FROM conversation_logs
ORDER BY created_at DESC
LIMIT 10;"""),
    ("004", 'Monitoring & Debugging, "Check Training Queue"',
     """-- Samples waiting for review
SELECT COUNT(*) as needs_review_count
FROM training_queue
WHERE review_status = 'needs-review';"""),
    ("004", 'Monitoring & Debugging, "Check Auto-Approval Rate"',
     """-- Today's auto-approval rate
SELECT
  COUNT(*) FILTER (WHERE review_status = 'auto-approved') * 100.0 / COUNT(*) as auto_approval_rate
FROM conversation_logs
WHERE created_at >= CURRENT_DATE;"""),
    ("004", 'Monitoring & Debugging, "Check Model Performance"',
     """-- Current production model
SELECT
  version,
  test_accuracy,
  production_accuracy,
  fallback_rate,
  traffic_percentage
FROM model_versions
WHERE status = 'production';"""),
    ("004", 'Troubleshooting, "No conversations being captured", 4. Check database',
     """SELECT COUNT(*) FROM conversation_logs;"""),
    ("004", 'Troubleshooting, "Weekly training not running", 3. Check sample count',
     """SELECT COUNT(*) FROM training_samples WHERE review_status='approved' AND model_version_target IS NULL;"""),
    ("000", 'Monitoring, "View All Models"',
     """SELECT version, accuracy, f1_score, is_active, training_timestamp 
FROM model_metadata 
ORDER BY created_at DESC;"""),
]
# the blocks that read the registry's mirror: each must return rows once a version is registered
MODEL_BLOCKS = [sql for _, _, sql in SEED_SQL if "model_versions" in sql or "model_metadata" in sql]
