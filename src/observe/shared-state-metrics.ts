import { Gauge, type Registry } from 'prom-client'

/** SharedStateReading is what the metrics need of the Valkey/Redis link's status. */
export interface SharedStateReading {
  state: 'shared' | 'local'
  queued: number
  dropped: number
  fingerprint: 'match' | 'mismatch' | 'unknown'
}

/**
 * sharedStateGauges adds the shared state's gauges to `registry`: whether it is shared now, what
 * waits for Redis, what was dropped, whether the instances' secrets agree. An alert on
 * `casgate_shared_state_up == 0` says lockout counts only per instance until it returns.
 */
export function sharedStateGauges (registry: Registry, read: () => SharedStateReading): void {
  const registers = [registry]
  const gauge = (name: string, help: string, value: (reading: SharedStateReading) => number): void => {
    const metric: Gauge = new Gauge({ name, help, registers, collect () { metric.set(value(read())) } })
  }
  gauge('casgate_shared_state_up', 'Whether site-wide state is shared through Valkey/Redis now (1), or kept and counted by this instance alone until Redis answers (0).', (reading) => reading.state === 'shared' ? 1 : 0)
  gauge('casgate_shared_state_queued_records', 'Site-wide records waiting for Valkey/Redis.', (reading) => reading.queued)
  gauge('casgate_shared_state_dropped_records', 'Site-wide records dropped since start because the queue for Valkey/Redis was full.', (reading) => reading.dropped)
  gauge('casgate_shared_state_secrets_match', 'Whether every instance seen in Valkey/Redis has the same session and affinity secrets (1), or some differ (0).', (reading) => reading.fingerprint === 'mismatch' ? 0 : 1)
}
