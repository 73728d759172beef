-- One alert as the queue shows it (all columns of alert_queue), by $alert_id; no row if unknown.
SELECT * FROM alert_queue WHERE alert_id = $alert_id
