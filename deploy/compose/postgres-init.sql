-- The audit trail's database, beside Temporal's own (which Temporal's set-up creates).
CREATE DATABASE certflow_audit;
