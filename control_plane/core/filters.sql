-- name: unknown_references
-- Of the (table, value) pairs a list's filters name, those that name nothing, in order.
SELECT ref.ordinal
FROM unnest(%(tables)s::text[], %(values)s::text[]) WITH ORDINALITY AS ref(table_name, value, ordinal)
WHERE NOT CASE ref.table_name
    WHEN 'zone' THEN EXISTS (SELECT 1 FROM residency_zone z WHERE z.slug = ref.value)
    WHEN 'site' THEN EXISTS (SELECT 1 FROM site s WHERE s.slug = ref.value)
    WHEN 'tenant' THEN EXISTS (SELECT 1 FROM tenant t WHERE t.slug = ref.value)
END
ORDER BY ref.ordinal;
