-- telemetry-bench schema. Applied by the harness (pipeline.db.apply_schema); nobody runs psql by hand.
-- The seed's table and enum types unchanged, plus the timing columns the harness needs.
-- Applied with search_path set to the target schema, so it names no schema itself.

DO $$ BEGIN
    CREATE TYPE system_type AS ENUM
        ('UNKNOWN_SYSTEM', 'ENGINE', 'FUEL_TANK', 'AVIONICS', 'TURBOPUMP', 'GUIDANCE', 'STAGE1', 'STAGE2');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN
    CREATE TYPE telemetry_type AS ENUM ('TEMPERATURE', 'PRESSURE', 'VELOCITY');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS telemetry_data (
    -- seed columns
    id                  serial PRIMARY KEY,
    reading_timestamp   timestamptz NOT NULL,
    created_at          timestamptz DEFAULT now(),
    telemetry_type      telemetry_type NOT NULL,
    sensor_id           varchar(50) NOT NULL,
    subsystem           system_type NOT NULL,
    sequence_number     integer,
    status_bitmask      smallint,
    temperature         real,
    temp_unit           varchar(10),
    pressure            real,
    pressure_unit       varchar(10),
    leak_detected       boolean,
    velocity_x          real,
    velocity_y          real,
    velocity_z          real,
    velocity_unit       varchar(10),
    vibration_magnitude real,
    -- added: one clock (CLOCK_REALTIME) along the path, integer ns since the epoch
    intended_ns         bigint,       -- generator's open-loop schedule
    sent_ns             bigint,       -- generator, when serialised
    ingested_ns         bigint,       -- ingest, when decoded
    -- per-row commit-side time: clock_timestamp() is evaluated per row (now() is the transaction start)
    inserted_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- No other indexes, as in the seed (kept out to keep inserts fast).
