-- wrk script: each connection sends its requests N at a time (HTTP/1.1 pipelining), N being the script's argument
-- (`wrk -s wrk_pipeline.lua URL -- N`). It cuts the load generator's system calls per request by about N, so on a
-- machine with few cores the generator takes less CPU from the servers it measures. The -H headers are kept.
init = function(args)
  local depth = tonumber(args[1]) or 1
  local batch = {}
  for i = 1, depth do
    batch[i] = wrk.format()
  end
  pipelined = table.concat(batch)
end

request = function()
  return pipelined
end
