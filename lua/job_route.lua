-- job_route (read only): where an asr_partial of a job goes.
--
-- KEYS[1] task               P..task:<task id>  (the task the job id names)
-- ARGV[1] node id            ARGV[2] job id
--
-- Returns JSON {status="ok", task_id, spec} when the node holds the job, else {status="stale"}.

local t = load_task(task_of(ARGV[2]))
if not runs_job(t, ARGV[2], ARGV[1], '') then
  return cjson.encode({ status = 'stale' })
end
return cjson.encode({ status = 'ok', task_id = task_of(ARGV[2]), spec = t.spec })
