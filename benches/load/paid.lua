-- wrk script for paid reads: every request carries a different pre-signed payment from the file
-- in $PAYMENTS (one PAYMENT-SIGNATURE value per line). Thread i of $WRK_THREADS uses lines i,
-- i + n, i + 2n, …, so no payment is sent twice; a thread that runs out sends no payment (the 402
-- counts as a non-2xx answer).
--
-- With IN_ORDER=1 (batch-settlement vouchers: one channel per thread, over its one connection)
-- a payment is used up when its answer arrives, not when its request is built: wrk builds one
-- request of its first thread before the run to check the script, and a channel whose deposit
-- was dropped that way would refuse every voucher after it.
local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
end

function init(args)
  local n = tonumber(os.getenv("WRK_THREADS") or "2")
  in_order = os.getenv("IN_ORDER") == "1"
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
    if not in_order then
      next_payment = next_payment + 1
    end
  end
  return wrk.format("GET", nil, headers)
end

function response(status, headers, body)
  if in_order then
    next_payment = next_payment + 1
  end
end

dofile(os.getenv("REPORT_LUA"))
