-- Argo CD health of a LunaPlugin (resource.customizations.health.luna.dev_LunaPlugin).
-- Healthy: the operator has seen this generation, the code is valid and every pod of the service
-- runs it. Progressing: not validated yet, or pods still rolling to the current code. Degraded:
-- the code is invalid (the last good version keeps serving) or pods report an error for it.
-- Suspended: spec.enabled is false. Reads status.phase, message, observedGeneration, podsReady,
-- podsTotal and podsFailing, as the operator writes them.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to validate the plugin"
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to validate generation " .. tostring(generation)
  return hs
end
if status.phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = status.message or "the code is invalid"
  return hs
end
if status.phase == "Disabled" then
  hs.status = "Suspended"
  hs.message = "spec.enabled is false: the plugin is out of the service's active list"
  return hs
end
if status.phase ~= "Ready" then
  hs.status = "Progressing"
  hs.message = status.message or ("phase " .. tostring(status.phase))
  return hs
end
if status.podsFailing ~= nil and status.podsFailing > 0 then
  hs.status = "Degraded"
  hs.message = status.message or (tostring(status.podsFailing) .. " pod(s) report an error")
  return hs
end
if status.podsTotal == nil or status.podsReady == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the sidecars' reports"
  return hs
end
local loaded = tostring(status.podsReady) .. "/" .. tostring(status.podsTotal)
if status.podsReady < status.podsTotal then
  hs.status = "Progressing"
  hs.message = loaded .. " pods run the current code"
  return hs
end
hs.status = "Healthy"
hs.message = loaded .. " pods run the current code"
return hs
