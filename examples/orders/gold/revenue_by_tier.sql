-- Revenue per day and customer tier, as the tier was on the order's day: a point-in-time join
-- with the SCD type 2 dimension (versions start at midnight UTC: valid_from <= day < valid_to).
SELECT
    o.order_date,
    coalesce(c.tier, 'unknown') AS tier,
    COUNT(*)                    AS order_count,
    SUM(o.amount)               AS revenue
FROM {{ ref('orders') }} AS o
LEFT JOIN {{ ref('dim_customers') }} AS c
    ON o.customer_id = c.customer_id
   AND CAST(c.valid_from AS DATE) <= o.order_date
   AND (c.valid_to IS NULL OR o.order_date < CAST(c.valid_to AS DATE))
GROUP BY o.order_date, coalesce(c.tier, 'unknown')
ORDER BY o.order_date, tier
