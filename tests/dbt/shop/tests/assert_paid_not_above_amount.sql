-- An order is never paid more than its amount.
select * from {{ ref('order_payments') }} where paid > amount + 0.001
