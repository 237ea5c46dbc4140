-- Example queries. Run one with: make sql Q="..."  (or paste into `make sql`).

-- Runs and how far each got.
SELECT r.run_id, r.model, r.status, r.n_samples, count(s.sample_id) AS stored
FROM runs r LEFT JOIN points s USING (run_id)
GROUP BY ALL ORDER BY r.updated_at DESC;

-- Class counts per run.
SELECT run_id, class_id, class_name, count(*) AS samples
FROM points GROUP BY ALL ORDER BY run_id, class_id;

-- Images of one class (PNG bytes; thumbnail is NULL when the image is small enough to be its own).
SELECT sample_id, seed, image_png FROM samples WHERE class_name = '7' LIMIT 16;

-- Which layers, steps and poolings were captured.
SELECT * FROM captured ORDER BY run_id, layer, pooling, step;

-- Exact top-10 neighbours of sample 42 in one layer, by cosine distance (checks the fast index).
SELECT n.sample_id, n.distance, p.class_name
FROM knn_exact((SELECT run_id FROM runs ORDER BY updated_at DESC LIMIT 1), 42, 'enc.8x8_block0', 'mean', 0, 10) AS n
JOIN points p ON p.sample_id = n.sample_id
  AND p.run_id = (SELECT run_id FROM runs ORDER BY updated_at DESC LIMIT 1);

-- The array functions need a fixed width: cast the vector.
SELECT a.sample_id,
       array_cosine_similarity(a.vector::FLOAT[64], b.vector::FLOAT[64]) AS similarity
FROM activations a, activations b
WHERE a.layer = 'enc.8x8_block0' AND b.layer = a.layer AND a.pooling = 'mean' AND b.pooling = 'mean'
  AND a.run_id = b.run_id AND b.sample_id = 0 AND a.step = 0 AND b.step = 0
ORDER BY similarity DESC LIMIT 5;
