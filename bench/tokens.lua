-- wrk script for bench/new-token.sh: every request carries a bearer token
-- the server has not seen before. Arguments: TOKEN_FILE PATH THREADS (the
-- same number as wrk's -t). Thread i takes lines i, i+THREADS, ... of the
-- file; a thread that runs out sends its last token again (a cached
-- decision), and done() prints how many requests did so, and how many
-- responses were not 200.
local threads = {}

function setup(thread)
    thread:set("id", #threads)
    table.insert(threads, thread)
end

function init(args)
    tokens, sent, bad = {}, 0, 0
    path = args[2]
    local nthreads = tonumber(args[3])
    local n = 0
    for line in io.lines(args[1]) do
        if n % nthreads == id then
            tokens[#tokens + 1] = line
        end
        n = n + 1
    end
    ntokens = #tokens
end

function request()
    sent = sent + 1
    return wrk.format("GET", path, {
        ["Authorization"] = "Bearer " .. tokens[math.min(sent, ntokens)],
        ["Accept"] = "application/vnd.oci.image.manifest.v1+json",
    })
end

function response(status, headers, body)
    if status ~= 200 then
        bad = bad + 1
    end
end

function done(summary, latency, requests)
    local bad_total, reused = 0, 0
    for _, t in ipairs(threads) do
        bad_total = bad_total + t:get("bad")
        local over = t:get("sent") - t:get("ntokens")
        if over > 0 then reused = reused + over end
    end
    io.write(string.format("not-200 %d reused %d\n", bad_total, reused))
end
