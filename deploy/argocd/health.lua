-- Argo CD health of DataCache and DataCacheReplication (eci.datacache.dev).
-- Healthy: Ready=True and status.observedGeneration == metadata.generation.
-- Degraded: Stalled=True, or Ready=False with a terminal reason.
-- Progressing: everything else (not yet observed, loading, retrying).
local hs = {status = "Progressing", message = "Waiting for the operator"}
local terminal = {
  InvalidParameter = true, NotFound = true, Failed = true, Forbidden = true,
  InvalidAccessKeyId = true, QuotaExceeded = true, Expired = true,
}
if obj.status == nil then
  return hs
end
local ready = nil
local stalled = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then ready = condition end
    if condition.type == "Stalled" then stalled = condition end
  end
end
local function describe(condition)
  local text = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if observed == nil or (generation ~= nil and observed ~= generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
if ready ~= nil then
  if ready.status == "True" then
    hs.status = "Healthy"
    hs.message = describe(ready)
    return hs
  end
  if ready.status == "False" and terminal[ready.reason] then
    hs.status = "Degraded"
    hs.message = describe(ready)
    return hs
  end
  hs.message = describe(ready)
end
return hs
