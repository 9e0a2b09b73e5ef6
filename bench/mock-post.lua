-- wrk script: POST a computational asset with a unique
-- platform_resource_identifier per request, so no request gets a 409.
-- The bearer token comes from the TOKEN environment variable.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local counter = 0
local token = os.getenv("TOKEN")

request = function()
  counter = counter + 1
  local body = string.format(
    '{"platform":"lab","platform_resource_identifier":"bench-%d-%d","name":"bench node","type":"compute node"}',
    id, counter)
  return wrk.format("POST", "/computational_assets",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }, body)
end
