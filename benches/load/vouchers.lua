-- wrk script for voucher-paid reads: thread i of $WRK_THREADS sends the payments of one
-- batch-settlement channel from the file in $PAYMENTS (lines i, i + n, i + 2n, …: a deposit, then
-- cumulative vouchers), in order, over its one connection. A payment is used up when its answer
-- arrives, not when its request is built: wrk builds one request of its first thread before
-- the run to check the script, and a channel whose deposit was dropped that way would refuse
-- every voucher after it. A thread that runs out sends no payment (the 402 counts as non-2xx).
local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
end

function init(args)
  local n = tonumber(os.getenv("WRK_THREADS") or "2")
  payments = {}
  local i = 0
  for line in io.lines(os.getenv("PAYMENTS")) do
    if i % n == index then
      payments[#payments + 1] = line
    end
    i = i + 1
  end
  next_payment = 1
end

function request()
  local headers = {}
  if next_payment <= #payments then
    headers["payment-signature"] = payments[next_payment]
  end
  return wrk.format("GET", nil, headers)
end

function response(status, headers, body)
  next_payment = next_payment + 1
end

dofile(os.getenv("REPORT_LUA"))
