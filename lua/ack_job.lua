-- ack_job: the node accepted (job_ack) or started (job_started) a job.
--
-- KEYS[1] task               P..task:<task id>  (the task the job id names)
-- ARGV[1] node id            ARGV[2] attempt id, or ''
-- ARGV[3] field to stamp: 'acked_ms' or 'started_ms'   ARGV[4] job id
--
-- Returns JSON {status="ok", task_id, spec, assigned_ms} or {status="stale"} when the node does not
-- hold this job.

local t = load_task(task_of(ARGV[4]))
if not runs_job(t, ARGV[4], ARGV[1], ARGV[2]) then
  return cjson.encode({ status = 'stale' })
end
t[ARGV[3]] = now_ms()
store_task(task_of(ARGV[4]), t)
return cjson.encode({ status = 'ok', task_id = task_of(ARGV[4]), spec = t.spec, assigned_ms = t.assigned_ms })
