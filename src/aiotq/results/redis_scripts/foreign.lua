-- For each task: whether it has a state stream (1 or 0), and its stored meta (or nil).
-- Celery's Redis backend SETs and PUBLISHes celery-task-meta-<id> and keeps no stream,
-- while aiotq stores its states in both at once (store.lua): a task with a stream is
-- followed through the stream alone.
--
-- KEYS: celery-task-meta-<id>, its state stream; then the same for the next task, ...

local found = {}
for i = 1, #KEYS, 2 do
  found[#found + 1] = {redis.call('EXISTS', KEYS[i + 1]), redis.call('GET', KEYS[i])}
end
return found
