// Bulk Data $export: installed later. Until then no $export operation is registered, so the
// server answers 404 for it.
export function installBulkExport() {}
