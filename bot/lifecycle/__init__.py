"""A job's life: accept and reserve, wait for approval or the segment before, submit, watch, settle, deliver; the poller that owns every job's task and its lease."""
