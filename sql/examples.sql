-- Example queries. Run one with: make sql Q="..."  (or paste into `make sql`).
-- The layer names are the demo's (`make layers MODEL=digits-dmd2` lists them; `captured` lists what a lake
-- holds). tests/test_views.py runs every query here against a lake made by ingest.

-- Runs and how far each got, newest first.
SELECT r.run_id, r.model, r.status, r.n_samples, count(s.sample_id) AS stored, r.updated_at
FROM runs r LEFT JOIN points s USING (run_id)
GROUP BY ALL ORDER BY r.updated_at DESC, r.run_id;

-- The latest complete run of each model: what "the latest run" means here and in `make embed`.
SELECT model, run_id, n_samples, updated_at FROM latest_runs ORDER BY model;

-- Class counts per run.
SELECT run_id, class_id, class_name, count(*) AS samples
FROM points GROUP BY ALL ORDER BY run_id, class_id;

-- Images of one class (PNG bytes; thumbnail is NULL when the image is small enough to be its own).
SELECT run_id, sample_id, seed, image_png FROM samples WHERE class_name = '7' ORDER BY run_id, sample_id LIMIT 16;

-- Which layers, steps and poolings were captured, and each layer's width (dim).
SELECT * FROM captured ORDER BY run_id, layer, pooling, step;

-- Exact top-10 neighbours of sample 42 in one layer of the latest digits-dmd2 run, by cosine distance (checks
-- the fast index). knn_exact returns them nearest first, but a join does not keep that order: ORDER BY again.
SELECT n.sample_id, n.distance, p.class_name
FROM knn_exact((SELECT run_id FROM latest_runs WHERE model = 'digits-dmd2'), 42, 'enc.8x8_block0', 'mean', 0, 10) AS n
JOIN points p ON p.sample_id = n.sample_id
  AND p.run_id = (SELECT run_id FROM latest_runs WHERE model = 'digits-dmd2')
ORDER BY n.distance, n.sample_id;

-- The 5 other samples most similar to sample 0 in one layer. list_cosine_similarity takes vectors of any width; the
-- array functions need the layer's width instead: array_cosine_similarity(a.vector::FLOAT[32], ...) here,
-- as enc.8x8_block0 has 32 channels (`captured` lists each layer's dim).
SELECT a.sample_id, list_cosine_similarity(a.vector, b.vector) AS similarity
FROM activations a JOIN activations b USING (run_id, layer, pooling, step)
WHERE a.run_id = (SELECT run_id FROM latest_runs WHERE model = 'digits-dmd2')
  AND a.layer = 'enc.8x8_block0' AND a.pooling = 'mean' AND a.step = 0 AND b.sample_id = 0 AND a.sample_id <> 0
ORDER BY similarity DESC, a.sample_id LIMIT 5;
