-- HTTP/1.1 pipelining for wrk, as TechEmpower's plaintext test sends it:
--     wrk -t1 -c256 -d5s -s bench/wrk/pipeline.lua http://127.0.0.1:PORT/api/status -- 16
-- init() builds one string of N copies of the request (N = the argument after "--",
-- 1 when none is given); request() hands that same string to every write, so each
-- connection sends N requests at once and wrk counts the N answers one by one.

init = function(args)
   local depth = tonumber(args[1]) or 1
   local requests = {}
   for i = 1, depth do
      requests[i] = wrk.format()
   end
   pipelined = table.concat(requests)
end

request = function()
   return pipelined
end
