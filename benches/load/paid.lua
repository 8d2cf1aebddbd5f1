-- wrk script for paid reads: every request carries a different pre-signed payment from the file
-- in $PAYMENTS (one PAYMENT-SIGNATURE value per line). Thread i of $WRK_THREADS uses lines i,
-- i + n, i + 2n, …, so no payment is sent twice; a thread that runs out sends no payment (the 402
-- counts as a non-2xx answer).
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
    next_payment = next_payment + 1
  end
  return wrk.format("GET", nil, headers)
end

dofile(os.getenv("REPORT_LUA"))
