-- Frame diagnosis (视频质量诊断) results and the last thumbnail, kept with the health row.
ALTER TABLE camera_health
    ADD COLUMN last_diagnosis_at timestamptz,
    ADD COLUMN last_diagnosis    jsonb,
    ADD COLUMN thumbnail         bytea;
