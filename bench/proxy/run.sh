#!/usr/bin/env bash
# Proxy load benchmark: Guardian's proxy against nginx and HAProxy, each
# splitting 90/10 between the same two backends on loopback, one core per
# proxy, driven by the same wrk command. Prints req/s, p99 and the CPU the
# proxy's core spent per request for each contender (medians over rounds),
# and the medians of the per-round ratios to nginx.
#
#   bash bench/proxy/run.sh            # ROUNDS=9 DURATION=5s CONNS=64
#   ROUNDS=15 DURATION=3s bash bench/proxy/run.sh
#
# Needs: go, wrk, nginx, haproxy (Debian packages; .ci/run installs them).
# Everything listens on 127.0.0.1 only and is stopped on exit.
set -euo pipefail

ROUNDS=${ROUNDS:-9}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
PORT=${BASE_PORT:-18400}
STABLE=127.0.0.1:$((PORT + 1))
CANARY=127.0.0.1:$((PORT + 2))
GUARDIAN=127.0.0.1:$((PORT + 10))
NGINX=127.0.0.1:$((PORT + 11))
HAPROXY=127.0.0.1:$((PORT + 12))

for bin in go wrk nginx haproxy; do
	command -v "$bin" >/dev/null || { [ -x "/usr/sbin/$bin" ] && PATH=$PATH:/usr/sbin; } || true
	command -v "$bin" >/dev/null || { echo "bench-proxy: $bin not found" >&2; exit 1; }
done

root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

# Pin each proxy to core 0 and the load generator and backends to the rest
# when there is more than one core, so the proxies compete on equal terms.
ncpu=$(nproc)
pin_proxy=() pin_rest=()
if [ "$ncpu" -gt 1 ] && command -v taskset >/dev/null; then
	pin_proxy=(taskset -c 0)
	pin_rest=(taskset -c 1-$((ncpu - 1)))
fi

(cd "$root" && go build -o "$tmp/guardian" ./cmd/guardian && go build -o "$tmp/backend" ./bench/proxy/backend)

GOMAXPROCS=1 "${pin_rest[@]}" "$tmp/backend" -addr "$STABLE" -name stable & pids+=($!)
GOMAXPROCS=1 "${pin_rest[@]}" "$tmp/backend" -addr "$CANARY" -name canary & pids+=($!)

GOMAXPROCS=1 "${pin_proxy[@]}" "$tmp/guardian" proxy --listen "$GUARDIAN" --stable "http://$STABLE" \
	--canary "http://$CANARY" --canary-weight 10 --admin "" 2>"$tmp/guardian.log" & pids+=($!)

mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $tmp/nginx/body;
	proxy_temp_path $tmp/nginx/proxy;
	fastcgi_temp_path $tmp/nginx/fastcgi;
	uwsgi_temp_path $tmp/nginx/uwsgi;
	scgi_temp_path $tmp/nginx/scgi;
	upstream app {
		server $STABLE weight=9;
		server $CANARY weight=1;
		keepalive 128;
	}
	server {
		listen $NGINX;
		location / {
			proxy_pass http://app;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
		}
	}
}
CONF
"${pin_proxy[@]}" nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" 2>"$tmp/nginx/stderr" & pids+=($!)

cat >"$tmp/haproxy.cfg" <<CONF
global
	nbthread 1
	maxconn 4096
defaults
	mode http
	option forwardfor
	http-reuse always
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend fe
	bind $HAPROXY
	default_backend app
backend app
	balance roundrobin
	server stable $STABLE weight 90
	server canary $CANARY weight 10
CONF
"${pin_proxy[@]}" haproxy -f "$tmp/haproxy.cfg" -db 2>"$tmp/haproxy.log" & pids+=($!)

# Wait until every contender answers.
for addr in "$STABLE" "$CANARY" "$GUARDIAN" "$NGINX" "$HAPROXY"; do
	for _ in $(seq 100); do
		curl -fs "http://$addr/" >/dev/null 2>&1 && break
		sleep 0.1
	done
	curl -fs "http://$addr/" >/dev/null || { echo "bench-proxy: $addr does not answer" >&2; cat "$tmp"/*.log "$tmp"/nginx/*.log 2>/dev/null >&2; exit 1; }
done

# p99 from wrk --latency in milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
		printf "%.3f", n }'
}

# CPU the proxy's core spent (user, system, irq, softirq) in clock ticks;
# with the proxies pinned it is the proxy's own work, its share of the
# kernel's TCP processing included.
core_ticks() { awk -v c="$1" '$1 == c {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
proxy_core=cpu # the whole machine, unless the proxies are pinned
[ ${#pin_proxy[@]} -gt 0 ] && proxy_core=cpu0
hz=$(getconf CLK_TCK)

declare -A rps p99 cpu
names=(guardian nginx haproxy)
declare -A addrs=([guardian]=$GUARDIAN [nginx]=$NGINX [haproxy]=$HAPROXY)
echo "wrk -c$CONNS -t$THREADS -d$DURATION, $ROUNDS rounds (contenders in a new random order each round), 90/10 split, $ncpu cores"
for name in "${names[@]}"; do
	"${pin_rest[@]}" wrk -c"$CONNS" -t"$THREADS" -d2s "http://${addrs[$name]}/" >/dev/null # warm up
done
# This machine's speed drifts by tens of percent within minutes (other
# tenants), so every ratio is taken within a round, between runs seconds
# apart, and the summary is the median of those per-round ratios.
for r in $(seq "$ROUNDS"); do
	for name in $(printf '%s\n' "${names[@]}" | shuf); do
		t0=$(core_ticks $proxy_core)
		out=$("${pin_rest[@]}" wrk -c"$CONNS" -t"$THREADS" -d"$DURATION" --latency "http://${addrs[$name]}/")
		t1=$(core_ticks $proxy_core)
		n=$(awk '/requests in/ {print $1}' <<<"$out")
		q=$(awk '/Requests\/sec:/ {print $2}' <<<"$out")
		l=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
		u=$(awk -v d="$((t1 - t0))" -v n="$n" -v hz="$hz" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
		errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
		rps[$name,$r]=$q p99[$name,$r]=$l cpu[$name,$r]=$u
		printf '  round %d %-8s %10s req/s  p99 %8s ms  %6s µs CPU/req %s\n' "$r" "$name" "$q" "$l" "$u" "$errs"
	done
done

median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '\n%-9s %10s %9s %11s | %12s %10s %12s\n' contender "req/s" "p99 ms" "µs CPU/req" "req/s÷nginx" "p99÷nginx" "CPU÷nginx"
for name in "${names[@]}"; do
	all_q="" all_l="" all_u="" rq="" rl="" ru=""
	for r in $(seq "$ROUNDS"); do
		all_q+=" ${rps[$name,$r]}" all_l+=" ${p99[$name,$r]}" all_u+=" ${cpu[$name,$r]}"
		rq+=" $(awk -v a="${rps[$name,$r]}" -v b="${rps[nginx,$r]}" 'BEGIN {print a / b}')"
		rl+=" $(awk -v a="${p99[$name,$r]}" -v b="${p99[nginx,$r]}" 'BEGIN {print a / b}')"
		ru+=" $(awk -v a="${cpu[$name,$r]}" -v b="${cpu[nginx,$r]}" 'BEGIN {print a / b}')"
	done
	printf '%-9s %10.0f %9.3f %11.1f | %12.2f %10.2f %12.2f\n' "$name" "$(median "$all_q")" "$(median "$all_l")" \
		"$(median "$all_u")" "$(median "$rq")" "$(median "$rl")" "$(median "$ru")"
done
if [ ${#pin_proxy[@]} -eq 0 ]; then
	echo "(one core: the proxies were not pinned, so µs CPU/req counts the whole machine)"
fi
