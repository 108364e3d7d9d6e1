-- Payloads and metadata are kept as the client wrote them: fluxgate stores each as canonical
-- text (keys sorted, no insignificant whitespace, numbers in the client's own digits) and
-- hashes exactly that text. JSONB would store numbers as NUMERIC and print them its own way
-- (1e-7 as 0.0000001) with its own key order; JSON keeps the text byte for byte, and is cheaper
-- to write. Nothing queries inside these columns.
ALTER TABLE events
    ALTER COLUMN payload TYPE json USING payload::json,
    ALTER COLUMN metadata TYPE json USING metadata::json;
