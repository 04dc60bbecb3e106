"""The numbered schema migrations, one list for both storage backends.

Each migration is written once in SQL both engines run; where PostgreSQL needs other words
(identity columns, PL/pgSQL triggers, BIGINT money), the entry carries its PostgreSQL text
beside the SQLite one. Numbers are shared: schema N means the same tables on either engine.
SQLite records the number in PRAGMA user_version, PostgreSQL in the schema_version table.
"""

from __future__ import annotations

from typing import NamedTuple


class Migration(NamedTuple):
    name: str
    sqlite: str
    postgres: str  # the same text unless PostgreSQL needs other words

    def sql_for(self, engine: str) -> str:
        return self.postgres if engine == "postgres" else self.sqlite


_SQLITE: tuple[tuple[str, str], ...] = (
    (
        "jobs, ledger, deliveries",
        """
        CREATE TABLE jobs (
            id                TEXT PRIMARY KEY,
            dedupe_key        TEXT UNIQUE,
            user_id           TEXT NOT NULL,
            team_id           TEXT,
            channel_id        TEXT NOT NULL,
            thread_ts         TEXT,
            status_ts         TEXT,
            source            TEXT NOT NULL,
            response_url      TEXT,
            model             TEXT NOT NULL,
            provider          TEXT NOT NULL,
            provider_model    TEXT NOT NULL,
            prompt            TEXT NOT NULL,
            duration_seconds  INTEGER NOT NULL,
            resolution        TEXT NOT NULL,
            aspect_ratio      TEXT NOT NULL,
            status            TEXT NOT NULL CHECK (status IN
                ('queued','submitted','running','succeeded','failed','cancelled')),
            failure_kind      TEXT,
            failure_detail    TEXT,
            progress          INTEGER,
            provider_job_id   TEXT,
            estimate_micros   INTEGER NOT NULL CHECK (estimate_micros >= 0),
            cost_micros       INTEGER NOT NULL DEFAULT 0 CHECK (cost_micros >= 0),
            video_url         TEXT,
            budget_day        TEXT NOT NULL,
            created_at        TEXT NOT NULL,
            updated_at        TEXT NOT NULL,
            submit_started_at TEXT,
            submitted_at      TEXT,
            last_progress_at  TEXT,
            stall_notified    INTEGER NOT NULL DEFAULT 0,
            last_status_edit_at TEXT,
            finished_at       TEXT,
            CHECK (status NOT IN ('failed','cancelled') OR failure_kind IS NOT NULL),
            CHECK (status NOT IN ('submitted','running','succeeded') OR provider_job_id IS NOT NULL)
        );
        CREATE INDEX jobs_status ON jobs(status);
        CREATE INDEX jobs_user_status ON jobs(user_id, status);
        CREATE INDEX jobs_created ON jobs(created_at);

        -- One account row per job: reserved on accept, then charged or released.
        CREATE TABLE ledger (
            job_id          TEXT PRIMARY KEY REFERENCES jobs(id),
            user_id         TEXT NOT NULL,
            budget_day      TEXT NOT NULL,
            reserved_micros INTEGER NOT NULL CHECK (reserved_micros >= 0),
            charged_micros  INTEGER NOT NULL DEFAULT 0 CHECK (charged_micros >= 0),
            state           TEXT NOT NULL CHECK (state IN ('reserved','charged','released','refunded')),
            created_at      TEXT NOT NULL,
            updated_at      TEXT NOT NULL
        );
        CREATE INDEX ledger_user_day ON ledger(user_id, budget_day, state);
        CREATE INDEX ledger_day ON ledger(budget_day, state);

        -- Append-only history of every money movement, for audits and explanations.
        CREATE TABLE ledger_events (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id        TEXT NOT NULL,
            user_id       TEXT NOT NULL,
            budget_day    TEXT NOT NULL,
            event         TEXT NOT NULL,
            amount_micros INTEGER NOT NULL,
            at            TEXT NOT NULL
        );

        -- Per-user limit overrides (admin commands fill this in).
        CREATE TABLE user_limits (
            user_id      TEXT PRIMARY KEY,
            limit_micros INTEGER NOT NULL CHECK (limit_micros >= 0),
            updated_at   TEXT NOT NULL,
            updated_by   TEXT
        );

        -- The outbox: the final message each job still owes its thread.
        CREATE TABLE deliveries (
            job_id      TEXT PRIMARY KEY REFERENCES jobs(id),
            kind        TEXT NOT NULL CHECK (kind IN ('video','failure','cancelled')),
            state       TEXT NOT NULL CHECK (state IN ('pending','done')),
            file_path   TEXT,
            message_ts  TEXT,
            method      TEXT,
            attempts    INTEGER NOT NULL DEFAULT 0,
            last_error  TEXT,
            created_at  TEXT NOT NULL,
            updated_at  TEXT NOT NULL
        );
        CREATE INDEX deliveries_state ON deliveries(state);
        """,
    ),
    (
        "run-time settings and the audit log",
        """
        -- Values admins change from Slack; once set they win over the environment.
        CREATE TABLE settings (
            key        TEXT PRIMARY KEY,
            value      TEXT,
            updated_at TEXT NOT NULL,
            updated_by TEXT
        );

        CREATE TABLE audit_log (
            id        INTEGER PRIMARY KEY AUTOINCREMENT,
            at        TEXT NOT NULL,
            actor     TEXT NOT NULL,
            action    TEXT NOT NULL,
            target    TEXT,
            old_value TEXT,
            new_value TEXT,
            note      TEXT
        );
        CREATE INDEX audit_at ON audit_log(at);
        """,
    ),
    (
        "the uploaded file of a delivery",
        """
        -- Set before files.completeUploadExternal: after a crash, files.info on it tells
        -- whether the video was already shared, so it is never posted twice.
        ALTER TABLE deliveries ADD COLUMN upload_file_id TEXT;
        """,
    ),
    (
        "reference images for image-to-video",
        """
        -- A prepared image file beside the database; it outlives restarts like the job does.
        ALTER TABLE jobs ADD COLUMN reference_image_path TEXT;
        ALTER TABLE jobs ADD COLUMN reference_image_mime TEXT
        """,
    ),
    (
        "provider callbacks",
        """
        -- Callbacks name the provider's job id; this finds our job from it.
        CREATE INDEX jobs_provider_job ON jobs(provider, provider_job_id);

        -- Deliveries already acted on: providers retry, attackers replay.
        CREATE TABLE webhook_deliveries (
            provider    TEXT NOT NULL,
            delivery_id TEXT NOT NULL,
            received_at TEXT NOT NULL,
            PRIMARY KEY (provider, delivery_id)
        );
        CREATE INDEX webhook_deliveries_received ON webhook_deliveries(received_at);
        """,
    ),
    (
        "compares, fallbacks and approvals",
        """
        -- One `/sora compare`: its jobs share the id, one request message and one summary.
        CREATE TABLE compares (
            id            TEXT PRIMARY KEY,
            user_id       TEXT NOT NULL,
            channel_id    TEXT NOT NULL,
            thread_ts     TEXT,
            status_ts     TEXT,
            prompt        TEXT NOT NULL,
            summary_state TEXT NOT NULL DEFAULT 'owed' CHECK (summary_state IN ('owed','done')),
            summary_ts    TEXT,
            created_at    TEXT NOT NULL
        );
        ALTER TABLE jobs ADD COLUMN compare_id TEXT REFERENCES compares(id);
        CREATE INDEX jobs_compare ON jobs(compare_id);

        -- The failed job a fallback job replaces (button or automatic).
        ALTER TABLE jobs ADD COLUMN fallback_of TEXT;

        -- A request over the approval threshold: its jobs wait in 'queued' until decided.
        -- The key is the job id, or the compare id for a compare.
        CREATE TABLE approvals (
            key          TEXT PRIMARY KEY,
            user_id      TEXT NOT NULL,
            amount_micros INTEGER NOT NULL CHECK (amount_micros >= 0),
            threshold_micros INTEGER NOT NULL,
            state        TEXT NOT NULL CHECK (state IN ('pending','approved','denied','expired','withdrawn')),
            decided_by   TEXT,
            decided_at   TEXT,
            created_at   TEXT NOT NULL,
            expires_at   TEXT NOT NULL
        );
        -- The admin DMs that carry a request's Approve/Deny buttons, edited once decided.
        CREATE TABLE approval_messages (
            key        TEXT NOT NULL REFERENCES approvals(key),
            channel_id TEXT NOT NULL,
            ts         TEXT NOT NULL,
            PRIMARY KEY (key, channel_id)
        );
        ALTER TABLE jobs ADD COLUMN approval_key TEXT REFERENCES approvals(key);
        CREATE INDEX jobs_approval ON jobs(approval_key);
        """,
    ),
    (
        "running daily totals of the ledger",
        """
        -- The workspace cap is checked inside every reservation; summing the whole day's
        -- ledger there grew with the day (20,000 rows: ~12 ms). Triggers keep one row per
        -- budget day in the same transaction as every ledger change, whoever makes it, so the
        -- total is exact and a crash can't leave it behind the ledger.
        CREATE TABLE ledger_day_totals (
            budget_day      TEXT PRIMARY KEY,
            spent_micros    INTEGER NOT NULL DEFAULT 0,
            reserved_micros INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO ledger_day_totals (budget_day, spent_micros, reserved_micros)
            SELECT budget_day,
                   SUM(CASE WHEN state='charged' THEN charged_micros ELSE 0 END),
                   SUM(CASE WHEN state='reserved' THEN reserved_micros ELSE 0 END)
            FROM ledger GROUP BY budget_day;

        CREATE TRIGGER ledger_day_totals_insert AFTER INSERT ON ledger BEGIN
            INSERT OR IGNORE INTO ledger_day_totals (budget_day) VALUES (new.budget_day);
            UPDATE ledger_day_totals
               SET spent_micros = spent_micros
                       + CASE WHEN new.state='charged' THEN new.charged_micros ELSE 0 END,
                   reserved_micros = reserved_micros
                       + CASE WHEN new.state='reserved' THEN new.reserved_micros ELSE 0 END
             WHERE budget_day = new.budget_day;
        END;

        CREATE TRIGGER ledger_day_totals_update
        AFTER UPDATE OF budget_day, state, reserved_micros, charged_micros ON ledger BEGIN
            UPDATE ledger_day_totals
               SET spent_micros = spent_micros
                       - CASE WHEN old.state='charged' THEN old.charged_micros ELSE 0 END,
                   reserved_micros = reserved_micros
                       - CASE WHEN old.state='reserved' THEN old.reserved_micros ELSE 0 END
             WHERE budget_day = old.budget_day;
            INSERT OR IGNORE INTO ledger_day_totals (budget_day) VALUES (new.budget_day);
            UPDATE ledger_day_totals
               SET spent_micros = spent_micros
                       + CASE WHEN new.state='charged' THEN new.charged_micros ELSE 0 END,
                   reserved_micros = reserved_micros
                       + CASE WHEN new.state='reserved' THEN new.reserved_micros ELSE 0 END
             WHERE budget_day = new.budget_day;
        END;

        CREATE TRIGGER ledger_day_totals_delete AFTER DELETE ON ledger BEGIN
            UPDATE ledger_day_totals
               SET spent_micros = spent_micros
                       - CASE WHEN old.state='charged' THEN old.charged_micros ELSE 0 END,
                   reserved_micros = reserved_micros
                       - CASE WHEN old.state='reserved' THEN old.reserved_micros ELSE 0 END
             WHERE budget_day = old.budget_day;
        END;
        """,
    ),
    (
        "the permalink of a job's thread",
        """
        -- What chat.getPermalink answered for (channel_id, thread_ts), looked up once when a
        -- Home first shows the job. A thread that moves (its parent deleted, a DM instead of
        -- the channel) drops it, whoever moves it, so a link never points at the old place.
        ALTER TABLE jobs ADD COLUMN thread_permalink TEXT;

        CREATE TRIGGER jobs_thread_moved AFTER UPDATE OF channel_id, thread_ts ON jobs
        WHEN old.channel_id IS NOT new.channel_id OR old.thread_ts IS NOT new.thread_ts BEGIN
            UPDATE jobs SET thread_permalink = NULL WHERE id = new.id;
        END;
        """,
    ),
    (
        "job leases",
        """
        -- The replica watching a job, and until when (ISO-8601 UTC) it holds it: renewed by
        -- that replica's heartbeat, taken over by another once it runs out. Cleared when the
        -- job needs nobody any more.
        ALTER TABLE jobs ADD COLUMN owner TEXT;
        ALTER TABLE jobs ADD COLUMN lease_until TEXT;
        CREATE INDEX jobs_owner ON jobs(owner);
        """,
    ),
    (
        "daily totals spread over rows",
        """
        -- SQLite admits one writer at a time: one totals row a day never waits. (PostgreSQL's
        -- text below spreads each day over sixteen.)
        """,
    ),
    (
        "ledger events written by the ledger",
        """
        -- Every money movement's event is written with the ledger change, by the database: no
        -- code path can forget one, and a reservation or a settlement is one statement fewer
        -- (a round trip to a PostgreSQL server).
        CREATE TRIGGER ledger_reserve_event AFTER INSERT ON ledger WHEN new.state = 'reserved' BEGIN
            INSERT INTO ledger_events (job_id, user_id, budget_day, event, amount_micros, at)
                VALUES (new.job_id, new.user_id, new.budget_day, 'reserve', new.reserved_micros, new.created_at);
        END;
        CREATE TRIGGER ledger_settle_event AFTER UPDATE OF state ON ledger
        WHEN old.state IS NOT new.state AND new.state IN ('charged', 'released', 'refunded') BEGIN
            INSERT INTO ledger_events (job_id, user_id, budget_day, event, amount_micros, at)
                VALUES (new.job_id, new.user_id, new.budget_day,
                        CASE new.state WHEN 'charged' THEN 'charge' WHEN 'released' THEN 'release' ELSE 'refund' END,
                        CASE new.state WHEN 'charged' THEN new.charged_micros WHEN 'released' THEN 0
                                       ELSE old.charged_micros END,
                        new.updated_at);
        END;
        """,
    ),
    (
        "daily totals pruned as they go",
        """
        -- Nothing to do on SQLite: it updates a row in place. (PostgreSQL's text below.)
        """,
    ),
    (
        "long videos: segments",
        """
        -- A request of several jobs is a compare (side by side) or a series: a long video's
        -- segments, one after another, each continuing the one before. A series owes no
        -- summary; its one video is the last segment's delivery.
        ALTER TABLE compares ADD COLUMN kind TEXT NOT NULL DEFAULT 'compare'
            CHECK (kind IN ('compare', 'series'));
        -- A segment: its place in the whole video (0 = the opening clip), the job it
        -- continues, how ('extend': the provider extends that video; 'last_frame': it starts
        -- from that video's last frame), and the failed attempts already retried.
        ALTER TABLE jobs ADD COLUMN segment_index INTEGER;
        ALTER TABLE jobs ADD COLUMN after_job TEXT;
        ALTER TABLE jobs ADD COLUMN continuation TEXT;
        ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX jobs_after ON jobs(after_job);
        """,
    ),
)


# PostgreSQL's text for the migrations whose SQLite text it can't run. Money is BIGINT (micro-
# dollars pass 2^31 at $2,147); timestamps stay ISO-8601 TEXT as in SQLite, so both engines
# compare and sort them the same way. jobs.rowid keeps insertion order, which SQLite gives
# every table for free and the code orders by.
_POSTGRES: dict[int, str] = {
    1: """
        CREATE TABLE jobs (
            rowid             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
            id                TEXT PRIMARY KEY,
            dedupe_key        TEXT UNIQUE,
            user_id           TEXT NOT NULL,
            team_id           TEXT,
            channel_id        TEXT NOT NULL,
            thread_ts         TEXT,
            status_ts         TEXT,
            source            TEXT NOT NULL,
            response_url      TEXT,
            model             TEXT NOT NULL,
            provider          TEXT NOT NULL,
            provider_model    TEXT NOT NULL,
            prompt            TEXT NOT NULL,
            duration_seconds  INTEGER NOT NULL,
            resolution        TEXT NOT NULL,
            aspect_ratio      TEXT NOT NULL,
            status            TEXT NOT NULL CHECK (status IN
                ('queued','submitted','running','succeeded','failed','cancelled')),
            failure_kind      TEXT,
            failure_detail    TEXT,
            progress          INTEGER,
            provider_job_id   TEXT,
            estimate_micros   BIGINT NOT NULL CHECK (estimate_micros >= 0),
            cost_micros       BIGINT NOT NULL DEFAULT 0 CHECK (cost_micros >= 0),
            video_url         TEXT,
            budget_day        TEXT NOT NULL,
            created_at        TEXT NOT NULL,
            updated_at        TEXT NOT NULL,
            submit_started_at TEXT,
            submitted_at      TEXT,
            last_progress_at  TEXT,
            stall_notified    INTEGER NOT NULL DEFAULT 0,
            last_status_edit_at TEXT,
            finished_at       TEXT,
            CHECK (status NOT IN ('failed','cancelled') OR failure_kind IS NOT NULL),
            CHECK (status NOT IN ('submitted','running','succeeded') OR provider_job_id IS NOT NULL)
        );
        CREATE INDEX jobs_status ON jobs(status);
        CREATE INDEX jobs_user_status ON jobs(user_id, status);
        CREATE INDEX jobs_created ON jobs(created_at);

        CREATE TABLE ledger (
            job_id          TEXT PRIMARY KEY REFERENCES jobs(id),
            user_id         TEXT NOT NULL,
            budget_day      TEXT NOT NULL,
            reserved_micros BIGINT NOT NULL CHECK (reserved_micros >= 0),
            charged_micros  BIGINT NOT NULL DEFAULT 0 CHECK (charged_micros >= 0),
            state           TEXT NOT NULL CHECK (state IN ('reserved','charged','released','refunded')),
            created_at      TEXT NOT NULL,
            updated_at      TEXT NOT NULL
        );
        CREATE INDEX ledger_user_day ON ledger(user_id, budget_day, state);
        CREATE INDEX ledger_day ON ledger(budget_day, state);

        CREATE TABLE ledger_events (
            id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            job_id        TEXT NOT NULL,
            user_id       TEXT NOT NULL,
            budget_day    TEXT NOT NULL,
            event         TEXT NOT NULL,
            amount_micros BIGINT NOT NULL,
            at            TEXT NOT NULL
        );

        CREATE TABLE user_limits (
            user_id      TEXT PRIMARY KEY,
            limit_micros BIGINT NOT NULL CHECK (limit_micros >= 0),
            updated_at   TEXT NOT NULL,
            updated_by   TEXT
        );

        CREATE TABLE deliveries (
            job_id      TEXT PRIMARY KEY REFERENCES jobs(id),
            kind        TEXT NOT NULL CHECK (kind IN ('video','failure','cancelled')),
            state       TEXT NOT NULL CHECK (state IN ('pending','done')),
            file_path   TEXT,
            message_ts  TEXT,
            method      TEXT,
            attempts    INTEGER NOT NULL DEFAULT 0,
            last_error  TEXT,
            created_at  TEXT NOT NULL,
            updated_at  TEXT NOT NULL
        );
        CREATE INDEX deliveries_state ON deliveries(state);
    """,
    2: """
        CREATE TABLE settings (
            key        TEXT PRIMARY KEY,
            value      TEXT,
            updated_at TEXT NOT NULL,
            updated_by TEXT
        );

        CREATE TABLE audit_log (
            id        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            at        TEXT NOT NULL,
            actor     TEXT NOT NULL,
            action    TEXT NOT NULL,
            target    TEXT,
            old_value TEXT,
            new_value TEXT,
            note      TEXT
        );
        CREATE INDEX audit_at ON audit_log(at);
    """,
    7: """
        CREATE TABLE ledger_day_totals (
            budget_day      TEXT PRIMARY KEY,
            spent_micros    BIGINT NOT NULL DEFAULT 0,
            reserved_micros BIGINT NOT NULL DEFAULT 0
        );
        INSERT INTO ledger_day_totals (budget_day, spent_micros, reserved_micros)
            SELECT budget_day,
                   SUM(CASE WHEN state='charged' THEN charged_micros ELSE 0 END),
                   SUM(CASE WHEN state='reserved' THEN reserved_micros ELSE 0 END)
            FROM ledger GROUP BY budget_day;

        -- One function for insert, update and delete: take the old row's share off its day,
        -- add the new row's share to its day.
        CREATE FUNCTION ledger_day_totals_keep() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                UPDATE ledger_day_totals
                   SET spent_micros = spent_micros
                           - CASE WHEN OLD.state='charged' THEN OLD.charged_micros ELSE 0 END,
                       reserved_micros = reserved_micros
                           - CASE WHEN OLD.state='reserved' THEN OLD.reserved_micros ELSE 0 END
                 WHERE budget_day = OLD.budget_day;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO ledger_day_totals (budget_day) VALUES (NEW.budget_day)
                    ON CONFLICT (budget_day) DO NOTHING;
                UPDATE ledger_day_totals
                   SET spent_micros = spent_micros
                           + CASE WHEN NEW.state='charged' THEN NEW.charged_micros ELSE 0 END,
                       reserved_micros = reserved_micros
                           + CASE WHEN NEW.state='reserved' THEN NEW.reserved_micros ELSE 0 END
                 WHERE budget_day = NEW.budget_day;
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER ledger_day_totals_insert AFTER INSERT ON ledger
            FOR EACH ROW EXECUTE FUNCTION ledger_day_totals_keep();
        CREATE TRIGGER ledger_day_totals_update
            AFTER UPDATE OF budget_day, state, reserved_micros, charged_micros ON ledger
            FOR EACH ROW EXECUTE FUNCTION ledger_day_totals_keep();
        CREATE TRIGGER ledger_day_totals_delete AFTER DELETE ON ledger
            FOR EACH ROW EXECUTE FUNCTION ledger_day_totals_keep();
    """,
    8: """
        ALTER TABLE jobs ADD COLUMN thread_permalink TEXT;

        CREATE FUNCTION jobs_thread_moved() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.channel_id IS DISTINCT FROM NEW.channel_id
               OR OLD.thread_ts IS DISTINCT FROM NEW.thread_ts THEN
                NEW.thread_permalink := NULL;
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER jobs_thread_moved BEFORE UPDATE OF channel_id, thread_ts ON jobs
            FOR EACH ROW EXECUTE FUNCTION jobs_thread_moved();
    """,
}

_POSTGRES[10] = """
    -- Every ledger change updates its day's running totals and holds that row's lock until
    -- COMMIT: with one row a day, every reservation of the day, on every replica, took turns
    -- on it. Sixteen rows a day, picked by the job id, let them pass side by side; readers sum
    -- a day's rows.
    ALTER TABLE ledger_day_totals ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
    ALTER TABLE ledger_day_totals DROP CONSTRAINT ledger_day_totals_pkey;
    ALTER TABLE ledger_day_totals ADD PRIMARY KEY (budget_day, shard);

    CREATE OR REPLACE FUNCTION ledger_day_totals_keep() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        -- upserts both ways: a row from before this migration counted in shard 0 takes its
        -- share out of its own shard, which may not exist yet (and may go below zero)
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            INSERT INTO ledger_day_totals AS t (budget_day, shard, spent_micros, reserved_micros)
                VALUES (OLD.budget_day, hashtext(OLD.job_id) & 15,
                        -CASE WHEN OLD.state='charged' THEN OLD.charged_micros ELSE 0 END,
                        -CASE WHEN OLD.state='reserved' THEN OLD.reserved_micros ELSE 0 END)
                ON CONFLICT (budget_day, shard) DO UPDATE
                SET spent_micros = t.spent_micros + EXCLUDED.spent_micros,
                    reserved_micros = t.reserved_micros + EXCLUDED.reserved_micros;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO ledger_day_totals AS t (budget_day, shard, spent_micros, reserved_micros)
                VALUES (NEW.budget_day, hashtext(NEW.job_id) & 15,
                        CASE WHEN NEW.state='charged' THEN NEW.charged_micros ELSE 0 END,
                        CASE WHEN NEW.state='reserved' THEN NEW.reserved_micros ELSE 0 END)
                ON CONFLICT (budget_day, shard) DO UPDATE
                SET spent_micros = t.spent_micros + EXCLUDED.spent_micros,
                    reserved_micros = t.reserved_micros + EXCLUDED.reserved_micros;
        END IF;
        RETURN NULL;
    END $$;
"""

_POSTGRES[11] = """
    CREATE FUNCTION ledger_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO ledger_events (job_id, user_id, budget_day, event, amount_micros, at)
            VALUES (NEW.job_id, NEW.user_id, NEW.budget_day,
                    CASE NEW.state WHEN 'reserved' THEN 'reserve' WHEN 'charged' THEN 'charge'
                                   WHEN 'released' THEN 'release' ELSE 'refund' END,
                    CASE NEW.state WHEN 'reserved' THEN NEW.reserved_micros WHEN 'charged' THEN NEW.charged_micros
                                   WHEN 'released' THEN 0 ELSE OLD.charged_micros END,
                    CASE WHEN TG_OP = 'INSERT' THEN NEW.created_at ELSE NEW.updated_at END);
        RETURN NULL;
    END $$;
    CREATE TRIGGER ledger_reserve_event AFTER INSERT ON ledger
        FOR EACH ROW WHEN (NEW.state = 'reserved') EXECUTE FUNCTION ledger_event();
    CREATE TRIGGER ledger_settle_event AFTER UPDATE OF state ON ledger
        FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND NEW.state IN ('charged', 'released', 'refunded'))
        EXECUTE FUNCTION ledger_event();
    -- jobs.rowid only orders a compare's few jobs: its unique index was one more to keep up
    -- on every insert
    ALTER TABLE jobs DROP CONSTRAINT jobs_rowid_key;
"""

_POSTGRES[12] = """
    -- Each ledger change leaves a dead version of a day's totals row behind, and a page is
    -- pruned only once it is nearly full: some hundred versions for every lookup and upsert to
    -- walk past, which cost a reservation more server time than all its other statements
    -- together. A page that keeps 90 % free is pruned on nearly every visit instead; the rows
    -- are few (sixteen a day), so the space is nothing.
    ALTER TABLE ledger_day_totals SET (fillfactor = 10);
"""

MIGRATIONS: tuple[Migration, ...] = tuple(
    Migration(name, sql, _POSTGRES.get(number, sql))
    for number, (name, sql) in enumerate(_SQLITE, start=1)
)
