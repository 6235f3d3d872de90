-- depends: 0011_compliance_request_pruning
-- GPU facts every agent backend reads and the agent protocol (agents/protocol.py) now
-- carries, which the control plane used to drop: the PCI bus id (where the GPU sits), the
-- enforced power limit, the CUDA compute capability, the confidential-computing mode
-- (sovereignty auditors ask about it) and the MIG devices carved out of the GPU.
--
-- The MIG devices are kept as the agent reported them, a JSON array of
-- {"index", "uuid", "profile", "gpu_instance_id", "compute_instance_id",
-- "memory_total_bytes"}: they are replaced whole with every changed inventory and read
-- with their GPU, and they are not part of the hardware identity (drift compares only GPU
-- UUIDs and serials and the system serial).
--
-- Existing rows read null (and no MIG devices) until their agent next reports its
-- inventory; its first report after the upgrade differs from the stored inventory hash
-- (the report has new fields), so it is applied and audited once as
-- node.inventory_changed. The application role's privileges on gpu are table-wide and
-- cover the new columns. Placement reads none of them (yet), so the fleet generation
-- trigger (0007) does not watch them; one that placement starts reading must be added there.

ALTER TABLE gpu
    ADD COLUMN pci_bus_id           text,
    -- double precision: a limit read as 612.4 W reads back as 612.4, not 612.400024.
    ADD COLUMN power_limit_w        double precision,
    ADD COLUMN compute_capability   text,
    ADD COLUMN confidential_compute text,
    ADD COLUMN mig_devices          jsonb NOT NULL DEFAULT '[]'
                                    CONSTRAINT gpu_mig_devices_is_array
                                    CHECK (jsonb_typeof(mig_devices) = 'array');
