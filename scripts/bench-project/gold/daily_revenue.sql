-- Revenue per day, region and currency. Sums are exact: amount is decimal(18,2).
SELECT
    order_date,
    region,
    currency,
    COUNT(*)              AS order_count,
    SUM(amount)           AS revenue,
    ROUND(AVG(amount), 2) AS avg_amount,
    MIN(amount)           AS min_amount,
    MAX(amount)           AS max_amount
FROM {{ ref('orders') }}
GROUP BY order_date, region, currency
ORDER BY order_date, region, currency
