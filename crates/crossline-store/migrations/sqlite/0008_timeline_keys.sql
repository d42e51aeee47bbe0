-- Timeline entries name a `prf_` profile by the 16 bytes of its UUID instead of 36 characters of
-- text (src/sqlite/timeline.rs, `ProfileKey`, applies the same rule to new entries): under half
-- the size, so more entries fit a page and a flush touches fewer pages.
UPDATE timeline SET profile_id = unhex(substr(profile_id, 5))
WHERE typeof(profile_id) = 'text' AND length(profile_id) = 36 AND substr(profile_id, 1, 4) = 'prf_'
    AND substr(profile_id, 5) = lower(substr(profile_id, 5)) AND unhex(substr(profile_id, 5)) IS NOT NULL;
