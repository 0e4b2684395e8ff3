-- The scene reference of frame diagnosis (场景变更 / 遮挡 / 偏色 are judged against it): a
-- 160×90 PNG of the view a technician accepted at installation, or the first clean one.
ALTER TABLE camera_health
    ADD COLUMN reference        bytea,
    ADD COLUMN reference_at     timestamptz,
    ADD COLUMN reference_source text CHECK (reference_source IN ('first_clean', 'accepted'));
