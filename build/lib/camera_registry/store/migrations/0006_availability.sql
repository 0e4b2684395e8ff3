-- Daily availability per camera: seconds spent in each status per local day (Asia/Shanghai,
-- the day a command centre reports on), so 在线率 over any date range is exact, not sampled.
--
-- Rows hold *closed* intervals only: when a status transition is stored, the seconds since the
-- previous transition are credited to the old status, split over the days they span
-- (health/store.py). The interval still open (the current status since the last transition) is
-- added at query time up to `now`, so a camera that stays online for a month without a single
-- transition is counted for the whole month without any periodic job.
CREATE TABLE camera_availability (
    camera_id   uuid NOT NULL REFERENCES cameras (id) ON DELETE CASCADE,
    day         date NOT NULL,
    online_s    double precision NOT NULL DEFAULT 0,
    degraded_s  double precision NOT NULL DEFAULT 0,
    flapping_s  double precision NOT NULL DEFAULT 0,
    offline_s   double precision NOT NULL DEFAULT 0,
    unknown_s   double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (camera_id, day)
);
-- Period KPIs read a range of days for many cameras.
CREATE INDEX camera_availability_day ON camera_availability (day);

-- Live leases for the `camreg_leases_outstanding` metric: released leases are NULL, so this
-- partial index holds only the cameras being probed right now, however large the registry.
CREATE INDEX camera_health_leased ON camera_health (lease_until) WHERE lease_until IS NOT NULL;

-- Backfill from the transitions stored so far: each transition closes the interval that began
-- at the previous one (or when the camera was registered) in its old status.
INSERT INTO camera_availability (camera_id, day, online_s, degraded_s, flapping_s, offline_s,
                                 unknown_s)
SELECT camera_id, day::date,
       coalesce(sum(secs) FILTER (WHERE status = 'online'), 0),
       coalesce(sum(secs) FILTER (WHERE status = 'degraded'), 0),
       coalesce(sum(secs) FILTER (WHERE status = 'flapping'), 0),
       coalesce(sum(secs) FILTER (WHERE status = 'offline'), 0),
       coalesce(sum(secs) FILTER (WHERE status = 'unknown'), 0)
FROM (
    SELECT i.camera_id, i.status, d AS day,
           extract(epoch FROM least(i.t1, (d + interval '1 day') AT TIME ZONE 'Asia/Shanghai')
                            - greatest(i.t0, d AT TIME ZONE 'Asia/Shanghai')) AS secs
    FROM (
        SELECT t.camera_id, t.old AS status, t.at AS t1,
               coalesce(lag(t.at) OVER (PARTITION BY t.camera_id ORDER BY t.at, t.id),
                        c.created_at) AS t0
        FROM status_transitions t JOIN cameras c ON c.id = t.camera_id
    ) i,
    generate_series((i.t0 AT TIME ZONE 'Asia/Shanghai')::date::timestamp,
                    (i.t1 AT TIME ZONE 'Asia/Shanghai')::date::timestamp,
                    interval '1 day') AS d
    WHERE i.t1 > i.t0
) s
WHERE secs > 0
GROUP BY camera_id, day;

