# Sourced by .ci/run and bench/run.sh: defines start_redis_cluster.
# A fresh 3-master cluster (no replicas): redis-server in cluster mode on 7000-7002, then
# `redis-cli --cluster create`. Any earlier one on those ports is shut down first.
start_redis_cluster() {
  local ports="7000 7001 7002" dir=/tmp/tower-api-guard-cluster
  command -v redis-server >/dev/null || return 1
  for p in $ports; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
  rm -rf "$dir"
  for p in $ports; do
    mkdir -p "$dir/$p"
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$dir/$p/nodes.conf" --cluster-node-timeout 2000 \
      --dir "$dir/$p" --save "" --appendonly no --daemonize yes --logfile "$dir/$p/log"
  done
  for p in $ports; do
    for _ in $(seq 1 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.2; done
  done
  redis-cli --cluster create 127.0.0.1:7000 127.0.0.1:7001 127.0.0.1:7002 \
    --cluster-replicas 0 --cluster-yes >/dev/null || return 1
  for _ in $(seq 1 100); do
    redis-cli -p 7000 cluster info 2>/dev/null | grep -q 'cluster_state:ok' && return 0
    sleep 0.2
  done
  echo "redis cluster did not become ready" >&2
  return 1
}
