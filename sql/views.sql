-- Views over the lake's Parquet shards. `{lake}` is replaced by the lake's root folder.
-- store.connect() runs this file; a table with no shards yet gets an empty view of the same columns.
-- Readers never block writers: these are views over globs, there is no database file.

-- One row per status change of each worker of each run (append-only log).
CREATE OR REPLACE VIEW run_events AS
SELECT * FROM read_parquet('{lake}/runs/*/*.parquet', union_by_name = true, hive_partitioning = false);

-- One row per run: its latest configuration and an overall status. A run is complete when every
-- worker (rank) of its latest world size has reported complete.
CREATE OR REPLACE VIEW runs AS
WITH latest AS (
    SELECT *, row_number() OVER (PARTITION BY run_id, rank ORDER BY updated_at DESC) AS newest
    FROM run_events
)
SELECT
    run_id,
    any_value(model) AS model,
    any_value(checkpoint) AS checkpoint,
    any_value(checkpoint_sha256) AS checkpoint_sha256,
    any_value(sampler) AS sampler,
    any_value(layers) AS layers,
    any_value(poolings) AS poolings,
    any_value(plan) AS plan,
    any_value(n_samples) AS n_samples,
    any_value(seed) AS seed,
    any_value(config_hash) AS config_hash,
    any_value(dtype) AS dtype,
    max(world_size) AS world_size,
    CASE
        WHEN count(*) FILTER (WHERE status = 'complete') >= max(world_size) THEN 'complete'
        WHEN bool_or(status = 'failed') THEN 'failed'
        ELSE 'running'
    END AS status,
    min(started_at) AS started_at,
    max(updated_at) AS updated_at
FROM latest
WHERE newest = 1
GROUP BY run_id;

-- The latest complete run of each model (one row per model): what "the latest run" means for the examples,
-- `make embed` without RUN= and `python -m store neighbours` without --run. A newer run that is still
-- running, or failed, does not replace it, nor do the few samples of a "Generate and place" in the explorer
-- (runs named gen-<run>-<hash>). Ties of updated_at go to the greater run id.
CREATE OR REPLACE VIEW latest_runs AS
SELECT * FROM runs
WHERE status = 'complete' AND NOT starts_with(run_id, 'gen-')
QUALIFY row_number() OVER (PARTITION BY model ORDER BY updated_at DESC, run_id DESC) = 1;

-- One row per generated sample, with its PNG image and thumbnail (NULL: the image is the thumbnail).
CREATE OR REPLACE VIEW samples AS
SELECT * FROM read_parquet('{lake}/samples/*/*.parquet', union_by_name = true, hive_partitioning = false);

-- One row per (sample, layer, step, pooling). `vector` is FLOAT[] of the layer's width `dim` (see `captured`);
-- list_cosine_similarity takes it as it is, the array functions need it cast to that width,
-- e.g. array_cosine_similarity(vector::FLOAT[32], ...) for a 32-wide layer.
CREATE OR REPLACE VIEW activations AS
SELECT *, len(vector) AS dim
FROM read_parquet('{lake}/activations/*/*/*/*.parquet', union_by_name = true, hive_partitioning = false);

-- Which (run, layer, step, pooling) vectors exist: what can be laid out or searched.
CREATE OR REPLACE VIEW captured AS
SELECT run_id, layer, pooling, step, any_value(noise_level) AS noise_level, any_value(dim) AS dim,
       count(*) AS vectors
FROM activations
GROUP BY ALL;

-- Sample metadata without image bytes: what maps and tables plot.
CREATE OR REPLACE VIEW points AS
SELECT run_id, sample_id, chunk, seed, class_id, class_name, prompt, tags, steps, width, height
FROM samples;

-- Exact k nearest neighbours of one sample by cosine distance, scanning every vector of the layer, nearest
-- first (ties by sample_id). A join does not keep that order: end a query that joins it with
-- ORDER BY distance, sample_id.
-- SELECT * FROM knn_exact('run', 42, 'enc.8x8_block0', 'mean', 0, 10);
CREATE OR REPLACE MACRO knn_exact(q_run, q_sample, q_layer, q_pooling, q_step, k) AS TABLE
WITH query AS (
    SELECT vector FROM activations
    WHERE run_id = q_run AND sample_id = q_sample AND layer = q_layer AND pooling = q_pooling AND step = q_step
)
SELECT a.sample_id, list_cosine_distance(a.vector, query.vector) AS distance
FROM activations AS a, query
WHERE a.run_id = q_run AND a.layer = q_layer AND a.pooling = q_pooling AND a.step = q_step
  AND a.sample_id <> q_sample
ORDER BY distance, a.sample_id
LIMIT k;

-- 2-D layouts written by `make embed`: one row per (layout, sample). knn_overlap is the neighbour audit:
-- the share of a point's 15 raw-space neighbours that are also among its 15 nearest on the map.
CREATE OR REPLACE VIEW embeddings AS
SELECT * FROM read_parquet('{lake}/embeddings/*/*/*/*.parquet', union_by_name = true, hive_partitioning = false);

-- One row per stored layout.
CREATE OR REPLACE VIEW layouts AS
SELECT run_id, layer, step, pooling, method, params_hash, any_value(params) AS params, count(*) AS points,
       avg(knn_overlap) AS mean_knn_overlap
FROM embeddings
GROUP BY run_id, layer, step, pooling, method, params_hash;

-- Raw-space neighbour graphs written by `make embed`: each sample's 50 nearest samples (cosine).
CREATE OR REPLACE VIEW neighbours AS
SELECT * FROM read_parquet('{lake}/indexes/*/*/*/*.parquet', union_by_name = true, hive_partitioning = false);

-- Map points: layout coordinates joined with sample metadata.
CREATE OR REPLACE VIEW map_points AS
SELECT e.run_id, e.layer, e.step, e.pooling, e.params_hash, e.sample_id, e.x, e.y, e.knn_overlap,
       p.seed, p.class_id, p.class_name, p.prompt, p.tags
FROM embeddings e JOIN points p USING (run_id, sample_id);

-- Paired-run comparisons written by `python -m store compare`: per layer, mean k-NN Jaccard overlap in raw
-- space, linear CKA, and the samples whose neighbourhoods changed most (lowest Jaccard first).
CREATE OR REPLACE VIEW comparisons AS
SELECT * FROM read_parquet('{lake}/comparisons/*/*.parquet', union_by_name = true, hive_partitioning = false);

-- Per-class (or per-prompt) diversity written by `python -m store diversity`: mean pairwise cosine distance,
-- k-NN class purity, near-duplicate pairs at a threshold, and the Vendi score (effective number of samples).
CREATE OR REPLACE VIEW diversity AS
SELECT * FROM read_parquet('{lake}/diversity/*/*/*/*.parquet', union_by_name = true, hive_partitioning = false);

-- Fidelity and diversity of a run against a reference run (its teacher, or real data) in one feature layer,
-- written by `python -m store fidelity`: per class or prompt and overall (kind 'all'), Fréchet distance,
-- precision, recall, density, coverage (k-NN manifolds, Euclidean) and both sides' Vendi scores.
CREATE OR REPLACE VIEW fidelity AS
SELECT * FROM read_parquet('{lake}/fidelity/*/*/*/*/*.parquet', union_by_name = true, hive_partitioning = false);

-- Named selections saved from the explorer ("Save selection"), one row per sample; also
-- store.selections.read_selection(lake, name) in Python.
CREATE OR REPLACE VIEW selections AS
SELECT * FROM read_parquet('{lake}/selections/*.parquet', union_by_name = true, hive_partitioning = false);
